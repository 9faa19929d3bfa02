"""Helpers shared by models and tools."""
from .cosine_kmeans import cosine_kmeans

__all__ = ['cosine_kmeans']
