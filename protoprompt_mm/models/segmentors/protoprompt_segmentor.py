"""ProtoPromptSegmentor: an EncoderDecoder that keeps the prototypes fresh."""
from typing import List

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..necks.prompted_features import as_prompted_features
from ..necks.prototype_bank import PrototypeBank
from .finite_loss import FiniteLossMixin


@MODELS.register_module()
class ProtoPromptSegmentor(FiniteLossMixin, EncoderDecoder):
    """``EncoderDecoder`` that drives a momentum ``PrototypeBank``.

    Identical to ``EncoderDecoder`` except that, after the decode head's
    losses of a training step, a ``PrototypeBank`` neck in ``'momentum'`` mode
    is updated with that step's pixel embeddings and (pseudo-)labels. With a
    ``'learned'`` bank it behaves like ``EncoderDecoder``. With the configs'
    ``FiniteLossOptimWrapper`` a non-finite loss stops every rank before the
    optimizer step, naming its terms.
    """

    def _decode_head_forward_train(self, inputs: List[Tensor],
                                   data_samples: SampleList) -> dict:
        losses = super()._decode_head_forward_train(inputs, data_samples)
        neck = self.neck if self.with_neck else None
        if isinstance(neck, PrototypeBank) and neck.update_mode == 'momentum':
            prompted = as_prompted_features(inputs, type(self).__name__)
            seg_label = self.decode_head._stack_batch_gt(data_samples)
            neck.momentum_update(
                prompted.embedding,
                seg_label,
                ignore_index=self.decode_head.ignore_index)
        return losses
