"""Registered metrics."""
from .tissue_iou_metric import TissueIoUMetric

__all__ = ['TissueIoUMetric']
