"""IoU metric that also reports each tissue class's IoU as a number."""
from typing import Dict

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class TissueIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` plus ``IoU.<class>`` entries in its result.

    mmseg prints the per-class table only to the log; here every class's IoU
    (in percent, like ``mIoU``) is also returned, so it reaches the metrics
    JSON that ``tools/test.py`` writes and scripts can read it. Ignored
    pixels (label 255: background, uncertain) count for nothing.
    """

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        intersect, union = (sum(part) for part in tuple(zip(*results))[:2])
        iou = (intersect / union).numpy()
        for name, value in zip(self.dataset_meta['classes'], iou):
            metrics[f'IoU.{name}'] = float(np.round(value * 100, 2))
        return metrics
