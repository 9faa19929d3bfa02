"""The tuple a :class:`PrototypeBank` neck hands to decode heads."""
from typing import Sequence, Tuple

from torch import Tensor


class PromptedFeatures(tuple):
    """Backbone features followed by the prototype prompts.

    Layout: ``(*feats, embedding, similarity, prototypes)``. Because the
    backbone levels come first, stock mmseg heads (auxiliary FCN heads, ...)
    keep indexing levels with their usual ``in_index``.

    Attributes:
        feats (tuple[Tensor]): The backbone levels, each (B, C_l, H_l, W_l).
        embedding (Tensor): L2-normalised pixel embeddings (B, D, h, w).
        similarity (Tensor): Cosine similarity of each pixel to its class's
            closest sub-prototype (B, N, h, w), in [-1, 1].
        prototypes (Tensor): L2-normalised prototypes (N, K, D).
    """

    def __new__(cls, feats: Sequence[Tensor], embedding: Tensor,
                similarity: Tensor, prototypes: Tensor) -> 'PromptedFeatures':
        return super().__new__(
            cls, (*feats, embedding, similarity, prototypes))

    @property
    def feats(self) -> Tuple[Tensor, ...]:
        return tuple(self[:-3])

    @property
    def embedding(self) -> Tensor:
        return self[-3]

    @property
    def similarity(self) -> Tensor:
        return self[-2]

    @property
    def prototypes(self) -> Tensor:
        return self[-1]


def as_prompted_features(inputs: Sequence[Tensor],
                         owner: str) -> PromptedFeatures:
    """Check that ``inputs`` came from a :class:`PrototypeBank` neck.

    Args:
        inputs: What the segmentor's neck returned.
        owner: Name of the component that needs the prompts (for the error).

    Returns:
        PromptedFeatures: ``inputs`` itself.

    Raises:
        TypeError: If the neck is not a ``PrototypeBank``.
    """
    if not isinstance(inputs, PromptedFeatures):
        raise TypeError(
            f'{owner} needs the output of a PrototypeBank neck '
            f'(PromptedFeatures), got {type(inputs).__name__}; add '
            "neck=dict(type='PrototypeBank', ...) to the model config.")
    return inputs
