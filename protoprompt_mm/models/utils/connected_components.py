"""Connected-component labelling of batched label maps, on their device."""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_OFFSETS = {
    4: [(0, 1), (0, -1), (1, 0), (-1, 0)],
    8: [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1),
        (-1, -1)],
}
_JUMPS_PER_ROUND = 2


def connected_components(labels: Tensor,
                         valid: Tensor,
                         connectivity: int = 4) -> Tensor:
    """Label the connected regions of equal label in a batch of maps.

    Two valid pixels of the same image are in one region when a path of
    valid pixels with their label joins them, each step going to one of the
    4 (or 8) neighbours; regions never cross images. The partition is the
    one of :func:`scipy.ndimage.label` applied to each label's mask with the
    same connectivity, but computed with tensor operations on the device of
    ``labels`` (GPU or CPU), the whole batch at once.

    Every pixel starts with its own flat index as id; a round (a) takes the
    smallest id among the pixel and its same-label valid neighbours, (b)
    hooks: the pixel its old id points to takes that smallest id too
    (``scatter_reduce`` with ``amin``), and (c) jumps pointers twice
    (``id = id[id]``). Ids stay inside their region and only decrease, so
    a round that changes nothing ends the loop, with every pixel holding its
    region's smallest flat index. Typical maps need 3-7 rounds; the host
    reads one bool per round (no map leaves the device).

    Args:
        labels: Integer label maps (B, H, W).
        valid: Bool mask (B, H, W) of the pixels that belong to a region.
        connectivity: 4 or 8.

    Returns:
        Tensor: int64 (B, H, W) on the device of ``labels``: for a valid
        pixel, the flat index into ``labels.reshape(-1)`` of its region's
        first pixel in row-major order (so equal values mean one region);
        -1 for the other pixels.

    Raises:
        ValueError: On shapes other than (B, H, W), a non-bool ``valid`` or
            a connectivity other than 4 or 8.
    """
    if labels.dim() != 3 or valid.shape != labels.shape:
        raise ValueError(
            'connected_components: labels and valid must both be (B, H, W), '
            f'got {tuple(labels.shape)} and {tuple(valid.shape)}')
    if valid.dtype != torch.bool:
        raise ValueError(
            f'connected_components: valid must be bool, got {valid.dtype}')
    if connectivity not in _OFFSETS:
        raise ValueError(
            f'connected_components: connectivity must be 4 or 8, got '
            f'{connectivity}')
    num_pixels = labels.numel()
    ids = torch.arange(
        num_pixels, device=labels.device).view(labels.shape)
    if num_pixels == 0:
        return ids
    links = _neighbour_links(labels, valid, connectivity)
    flat = ids.reshape(-1)
    while True:
        padded = F.pad(ids, (1, 1, 1, 1), value=num_pixels)
        smallest = ids
        for (dy, dx), same in links:
            smallest = torch.minimum(
                smallest, torch.where(same, _shifted(padded, dy, dx),
                                      num_pixels))
        smallest = smallest.reshape(-1)
        new = flat.scatter_reduce(0, flat, smallest, reduce='amin')
        new = torch.minimum(new, smallest)
        for _ in range(_JUMPS_PER_ROUND):
            new = new[new]
        if torch.equal(new, flat):
            break
        flat = new
        ids = flat.view(labels.shape)
    return torch.where(valid, ids, -1)


def _shifted(padded: Tensor, dy: int, dx: int) -> Tensor:
    """The (B, H, W) view whose pixel (i, j) is pixel (i + dy, j + dx).

    Args:
        padded: A (B, H + 2, W + 2) map padded by one pixel on each side.
        dy: Row offset in [-1, 1].
        dx: Column offset in [-1, 1].

    Returns:
        Tensor: (B, H, W) view of ``padded``.
    """
    height, width = padded.shape[1] - 2, padded.shape[2] - 2
    return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def _neighbour_links(labels: Tensor, valid: Tensor,
                     connectivity: int) -> List[Tuple[Tuple[int, int],
                                                      Tensor]]:
    """Per neighbour offset, where a pixel and that neighbour are linked.

    Args:
        labels: Label maps (B, H, W).
        valid: Bool mask (B, H, W).
        connectivity: 4 or 8.

    Returns:
        list: ``((dy, dx), linked)`` pairs, ``linked`` a (B, H, W) bool map
        true where the pixel and its neighbour at (dy, dx) are both valid
        and share their label.
    """
    padded_labels = F.pad(labels, (1, 1, 1, 1))
    padded_valid = F.pad(valid, (1, 1, 1, 1), value=False)
    return [((dy, dx), valid & _shifted(padded_valid, dy, dx)
             & (labels == _shifted(padded_labels, dy, dx)))
            for dy, dx in _OFFSETS[connectivity]]
