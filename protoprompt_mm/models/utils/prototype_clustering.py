"""K sub-prototypes per class by cosine k-means of its image features."""
import logging
from typing import List, Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor

from .cosine_kmeans import cosine_kmeans


class ClassFeatures:
    """Per class, image vectors and the tissue-pixel embeddings of a few.

    The pixel embeddings are kept for the first K - 1 images of a class
    only: :func:`cluster_class_features` needs them when a class has fewer
    than K images.

    Args:
        num_classes: N.
        num_prototypes: K.
    """

    def __init__(self, num_classes: int, num_prototypes: int) -> None:
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.image_vecs: List[List[Tensor]] = [[] for _ in range(num_classes)]
        self.pixel_feats: List[List[Tensor]] = [
            [] for _ in range(num_classes)
        ]

    def count(self, cls: int) -> int:
        """Number of images of class ``cls``."""
        return len(self.image_vecs[cls])

    def add(self, cls: int, vec: Tensor, pixels: Tensor) -> None:
        """Add an image of class ``cls``, moved to the CPU.

        Args:
            cls: Class index.
            vec: Image vector (D,).
            pixels: Its tissue-pixel embeddings (P, D); kept while the class
                has fewer than K - 1 images.
        """
        if self.count(cls) < self.num_prototypes - 1:
            self.pixel_feats[cls].append(pixels.cpu())
        self.image_vecs[cls].append(vec.cpu())


def cluster_class_features(single: ClassFeatures, multi: ClassFeatures,
                           class_names: Sequence[str], embed_dim: int,
                           num_iters: int = 50, seed: int = 0) -> Tensor:
    """K prototypes per class by :func:`cosine_kmeans` of its features.

    A class is clustered from the vectors of its single-label images.
    Fallbacks (each logged as a warning): a class without a single-label
    image uses its multi-label images instead; a class with 0 < n < K
    images is clustered from the tissue-pixel embeddings of those n images.

    Args:
        single: Features of the single-label images.
        multi: Features of the multi-label images, per class they include.
        class_names: N names, for the messages.
        embed_dim: D.
        num_iters: k-means iterations.
        seed: k-means seed.

    Returns:
        Tensor: Unit-length prototypes (N, K, D), on the CPU.

    Raises:
        ValueError: If a class has no image at all, or too few tissue pixels
            for K clusters.
    """
    num_prototypes = single.num_prototypes
    prototypes = torch.zeros(len(class_names), num_prototypes, embed_dim)
    for cls, name in enumerate(class_names):
        pool, kind = single, 'single-label'
        if single.count(cls) == 0:
            if multi.count(cls) == 0:
                raise ValueError(
                    f'class {cls} ({name}): no single-label image in the '
                    'image bank, and no image whose img_labels include it; '
                    f'{num_prototypes} prototypes need images of it')
            pool, kind = multi, 'multi-label'
            print_log(
                f'class {cls} ({name}): no single-label image; its '
                f'prototypes come from {multi.count(cls)} multi-label '
                'image(s) that include it (mixed with other classes)',
                logger='current',
                level=logging.WARNING)
        count = pool.count(cls)
        if count >= num_prototypes:
            points = torch.stack(pool.image_vecs[cls])
        else:
            points = torch.cat(pool.pixel_feats[cls])
            print_log(
                f'class {cls} ({name}): only {count} {kind} image(s) for '
                f'{num_prototypes} prototypes; clustering their '
                f'{points.shape[0]} tissue-pixel embeddings instead',
                logger='current',
                level=logging.WARNING)
            if points.shape[0] < num_prototypes:
                raise ValueError(
                    f'class {cls} ({name}): {points.shape[0]} tissue pixels '
                    f'are too few for {num_prototypes} prototypes')
        prototypes[cls] = cosine_kmeans(points, num_prototypes, num_iters,
                                        seed)
    return prototypes
