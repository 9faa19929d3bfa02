"""The synthetic batch the ProtoPrompt-vs-baseline benchmark runs on.

``batch`` uint8 images of ``size`` x ``size`` and blocky random
pseudo-labels (:data:`LABEL_CELL` pixel cells, about
:data:`IGNORE_FRACTION` of them :data:`IGNORE_INDEX`), with the image labels
of the classes they hold (what a stage-1 CAM config trains on). No data set
is read.
"""
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

LABEL_CELL = 32
IGNORE_FRACTION = 0.1
IGNORE_INDEX = 255


def synthetic_batch(batch: int, size: int, num_classes: int,
                    seed: int = 0) -> dict:
    """Random uint8 images and blocky pseudo-labels with ignored cells.

    Args:
        batch: Number of images.
        size: Image side.
        num_classes: Labels are drawn from [0, num_classes).
        seed: Seed of the generator.

    Returns:
        dict: ``inputs`` (list of (3, size, size) uint8) and
        ``data_samples`` (``SegDataSample`` with ``gt_sem_seg`` and
        ``img_labels`` in the metainfo, the int64 (N,) multi-hot of the
        classes in the labels, which stage-1 CAM models train on).
    """
    gen = torch.Generator().manual_seed(seed)
    cells = -(-size // LABEL_CELL)
    coarse = torch.randint(0, num_classes, (batch, 1, cells, cells),
                           generator=gen)
    ignored = torch.rand(coarse.shape, generator=gen) < IGNORE_FRACTION
    coarse[ignored] = IGNORE_INDEX
    labels = coarse.repeat_interleave(LABEL_CELL, 2).repeat_interleave(
        LABEL_CELL, 3)[..., :size, :size]
    inputs, samples = [], []
    for label in labels:
        inputs.append(
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=gen))
        present = label[label != IGNORE_INDEX].unique()
        img_labels = torch.zeros(num_classes, dtype=torch.int64)
        img_labels[present] = 1
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                img_labels=img_labels.numpy()))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
