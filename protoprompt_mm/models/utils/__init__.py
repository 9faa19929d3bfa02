"""Helpers shared by models and tools."""
from .cam_utils import (fuse_cams, gate_cams, gated_argmax, labels_from_probs,
                        normalize_cams, stack_img_labels)
from .connected_components import connected_components
from .cosine_kmeans import cosine_kmeans
from .nearest_resize import resize_nearest
from .prototype_clustering import ClassFeatures, cluster_class_features
from .prototype_state import (PrototypeStateMixin, checked_prototypes,
                              load_prototype_file)
from .sub_prototypes import MERGE_MODES, merge_sub_prototypes

__all__ = [
    'cosine_kmeans', 'normalize_cams', 'fuse_cams', 'labels_from_probs',
    'gate_cams', 'gated_argmax', 'stack_img_labels', 'MERGE_MODES',
    'checked_prototypes', 'merge_sub_prototypes', 'PrototypeStateMixin',
    'load_prototype_file', 'connected_components', 'ClassFeatures',
    'cluster_class_features', 'resize_nearest'
]
