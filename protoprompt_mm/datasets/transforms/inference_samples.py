"""Samples from outside a dataset, as mmseg's inference API builds them."""


def is_inference_sample(results: dict) -> bool:
    """Whether ``results`` comes from mmseg's inference API, not a dataset.

    mmseg's ``inference_model`` and ``MMSegInferencer`` run a config's
    ``test_pipeline`` on ``dict(img=array)`` or ``dict(img_path=file)`` and
    drop only their own ``LoadAnnotations`` from it. Every sample of this
    project's datasets carries ``img_labels`` (training) or
    ``seg_map_path`` (val / test), so a sample with neither has no
    annotations to load: the annotation transforms pass it through.

    Args:
        results: The transform's result dict.

    Returns:
        bool: True if it has neither ``img_labels`` nor ``seg_map_path``.
    """
    return 'img_labels' not in results and 'seg_map_path' not in results
