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


def _has_prompted_layout(inputs: object) -> bool:
    """Whether ``inputs`` is a sequence laid out as :class:`PromptedFeatures`.

    True for a tuple or list of at least one backbone level followed by an
    embedding (B, D, h, w), a similarity (B, N, h, w) and prototypes
    (N, K, D) of matching sizes: what a wrapper that rebuilds the neck's
    output (``tuple(feats)``, a list comprehension) hands on. Backbone or
    FPN levels alone never match (their last entry is not 3-D).

    Args:
        inputs: What a neck or a wrapper returned.

    Returns:
        bool: True if the last three entries are the prototype prompts.
    """
    if not isinstance(inputs, (tuple, list)) or len(inputs) < 4 \
            or not all(isinstance(t, Tensor) for t in inputs):
        return False
    embedding, similarity, prototypes = inputs[-3:]
    return (embedding.dim() == 4 and similarity.dim() == 4
            and prototypes.dim() == 3
            and embedding.shape[0] == similarity.shape[0]
            and embedding.shape[2:] == similarity.shape[2:]
            and similarity.shape[1] == prototypes.shape[0]
            and embedding.shape[1] == prototypes.shape[2])


def _describe(inputs: object) -> str:
    """Say what a head received, for error messages.

    Args:
        inputs: What a neck returned.

    Returns:
        str: E.g. ``'a tuple of 4 tensors of shapes (2, 8, 16, 16), ...'``.
    """
    if isinstance(inputs, Tensor):
        return f'a single Tensor of shape {tuple(inputs.shape)}'
    if isinstance(inputs, (tuple, list)):
        shapes = ', '.join(
            str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__
            for t in inputs)
        return (f'a {type(inputs).__name__} of {len(inputs)} entries of '
                f'shapes {shapes}')
    return f'a {type(inputs).__name__}'


def as_prompted_features(inputs: Sequence[Tensor],
                         owner: str) -> PromptedFeatures:
    """Return the :class:`PromptedFeatures` of a :class:`PrototypeBank` neck.

    A wrapper that rebuilt the neck's tuple (``tuple(feats)``,
    ``[f for f in feats]``) loses the class but keeps the layout; such a
    sequence is wrapped again (see :func:`_has_prompted_layout`).

    Args:
        inputs: What the segmentor's neck returned.
        owner: Name of the component that needs the prompts (for the error).

    Returns:
        PromptedFeatures: ``inputs`` itself, or its entries wrapped again.

    Raises:
        TypeError: If ``inputs`` does not hold the prototype prompts, e.g.
            after a neck other than ``PrototypeBank`` (FPN, ...).
    """
    if isinstance(inputs, PromptedFeatures):
        return inputs
    if _has_prompted_layout(inputs):
        return PromptedFeatures(inputs[:-3], *inputs[-3:])
    raise TypeError(
        f'{owner} needs the PromptedFeatures of a PrototypeBank neck '
        '(*backbone levels, embedding (B, D, h, w), similarity (B, N, h, w), '
        f'prototypes (N, K, D)); got {_describe(inputs)}. Put '
        "neck=dict(type='PrototypeBank', in_channels=<the backbone's "
        "channels>, num_classes=..., embed_dim=...) in the model config, "
        'in place of any other neck (e.g. FPN): the head reads the '
        "prototypes from it.")
