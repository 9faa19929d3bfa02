"""Evaluation metrics."""
from .metrics import TissueIoUMetric

__all__ = ['TissueIoUMetric']
