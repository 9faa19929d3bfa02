"""Registered components; importing this module registers them."""
from .feature_capture import MultiLevelFeatureCapture  # noqa: F401
