"""CAMSegmentor: stage-1 model trained from image-level labels only."""
from typing import List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList)
from torch import Tensor

from ..necks.prototype_bank import PrototypeBank
from ..utils import (gate_cams, gated_argmax, labels_from_probs,
                     normalize_cams, stack_img_labels)
from .finite_loss import FiniteLossMixin

TEST_CFG_DEFAULTS = dict(
    mode='whole', cls_thresh=0.5, use_gt_labels=False, scales=(1.0, ),
    flip=False)


@MODELS.register_module()
class CAMSegmentor(FiniteLossMixin, BaseSegmentor):
    """Weakly supervised segmentor whose predictions are gated CAMs.

    Training is a multi-label classification of the image-level labels
    (``data_sample.metainfo['img_labels']``, (N,) 0 / 1); ``gt_sem_seg`` is
    never read. Prediction turns the head's CAMs into segmentation: the
    levels are fused (:meth:`BaseCAMHead.fuse`), optionally averaged over
    test-time scales and flips (:meth:`inference`), gated by image-level
    labels and resized to the original image size. ``seg_logits`` are the
    gated CAMs (N, H, W) in [0, 1] and ``pred_sem_seg`` their arg-max over
    the kept classes, so ``IoUMetric`` scores the CAMs directly. With the
    configs' ``FiniteLossOptimWrapper`` a non-finite loss stops every rank
    before the optimizer step, naming its terms.

    Args:
        backbone: Backbone config.
        decode_head: A CAM head config (``CAMHead``, ``PrototypeCAMHead``).
        neck: Optional neck config (e.g. ``PrototypeBank``, which must use
            ``update_mode='learned'``: without pseudo masks no momentum update
            can happen).
        test_cfg: Prediction options, defaults in brackets:

            - ``mode`` ('whole'): only whole-image inference is supported.
            - ``cls_thresh`` (0.5): a class is predicted present when its
              probability exceeds this; the top class is kept if none does.
            - ``use_gt_labels`` (False): gate by the ground-truth
              ``img_labels`` instead of the predicted labels.
            - ``scales`` ((1.0,)): input scale factors averaged over.
            - ``flip`` (False): also average over horizontal flips.
        data_preprocessor: ``SegDataPreProcessor`` config.
        pretrained: Backbone checkpoint, as ``EncoderDecoder`` takes it
            (mmseg's ``init_model`` passes None); the configs set the
            backbone's ``init_cfg`` through ``pretrained`` instead.
        train_cfg: Unused (training options live in the head and its
            losses); accepted as ``EncoderDecoder`` accepts it, for mmseg's
            ``init_model``.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 backbone: ConfigType,
                 decode_head: ConfigType,
                 neck: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 train_cfg: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if pretrained is not None:
            backbone = dict(backbone, pretrained=pretrained)
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
            if isinstance(self.neck, PrototypeBank) \
                    and self.neck.update_mode != 'learned':
                raise ValueError(
                    'CAMSegmentor: the PrototypeBank neck needs update_mode='
                    f"'learned' (got {self.neck.update_mode!r}); its "
                    'prototypes can only be learned through the '
                    'classification loss')
        self.decode_head = MODELS.build(decode_head)
        self.num_classes = self.decode_head.num_classes
        # Channels of seg_logits, as EncoderDecoder (read by SegTTAModel).
        self.out_channels = self.num_classes
        self.align_corners = self.decode_head.align_corners
        self.test_cfg = self._check_test_cfg(test_cfg)
        self._gating_logged = False

    @staticmethod
    def _check_test_cfg(test_cfg: OptConfigType) -> dict:
        """Merge ``test_cfg`` with the defaults and validate it.

        Raises:
            KeyError: On an unknown key.
            ValueError: On an unsupported mode or invalid scales.
        """
        test_cfg = dict(test_cfg or {})
        unknown = sorted(set(test_cfg) - set(TEST_CFG_DEFAULTS))
        if unknown:
            raise KeyError(f'CAMSegmentor: unknown test_cfg keys {unknown}; '
                           f'expected some of {sorted(TEST_CFG_DEFAULTS)}')
        cfg = {**TEST_CFG_DEFAULTS, **test_cfg}
        if cfg['mode'] != 'whole':
            raise ValueError("CAMSegmentor: test_cfg.mode must be 'whole', "
                             f"got {cfg['mode']!r}")
        if not cfg['scales'] or min(cfg['scales']) <= 0:
            raise ValueError('CAMSegmentor: test_cfg.scales must be positive '
                             f"factors, got {cfg['scales']}")
        return cfg

    def extract_feat(self, inputs: Tensor) -> Sequence[Tensor]:
        """Backbone (and neck) features.

        Args:
            inputs: Images (B, 3, H, W).

        Returns:
            Sequence[Tensor]: Feature levels (``PromptedFeatures`` with a
            ``PrototypeBank`` neck).
        """
        feats = self.backbone(inputs)
        if self.with_neck:
            feats = self.neck(feats)
        return feats

    def _single_pass(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """Fused CAMs and class probabilities of one forward pass.

        Args:
            inputs: Images (B, 3, H, W).

        Returns:
            tuple: CAMs (B, N, H, W) in [0, 1] and probabilities (B, N).
        """
        cams, scores = self.decode_head(self.extract_feat(inputs))
        return (self.decode_head.fuse(cams, inputs.shape[2:]),
                self.decode_head.class_probs(scores))

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Ungated fused CAMs of one pass (no test-time augmentation).

        Args:
            inputs: Images (B, 3, H, W).
            data_samples: Unused.

        Returns:
            Tensor: CAMs (B, N, H, W) in [0, 1].
        """
        return self._single_pass(inputs)[0]

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Multi-label loss on the image-level labels.

        Args:
            inputs: Images (B, 3, H, W).
            data_samples: Samples with ``img_labels`` in their metainfo.

        Returns:
            dict: ``loss_cls`` (the head's loss name) and ``acc_cls``.

        Raises:
            KeyError: If a sample has no ``img_labels``.
        """
        labels = stack_img_labels(data_samples, self.num_classes,
                                  inputs.device)
        return self.decode_head.loss(self.extract_feat(inputs), labels)

    def inference(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """Fused CAMs and class probabilities, averaged over the test-time
        scales and flips of ``test_cfg``.

        Args:
            inputs: Images (B, 3, H, W), any size.

        Returns:
            tuple: Ungated CAMs (B, N, H, W) in [0, 1] (each map peaking at
            1) and class probabilities (B, N).
        """
        size = inputs.shape[2:]
        flips = (False, True) if self.test_cfg['flip'] else (False, )
        cams, probs = 0, 0
        for scale in self.test_cfg['scales']:
            scaled = inputs if scale == 1 else resize(
                inputs,
                scale_factor=scale,
                mode='bilinear',
                align_corners=self.align_corners)
            for flip in flips:
                view_cams, view_probs = self._single_pass(
                    scaled.flip(3) if flip else scaled)
                view_cams = resize(
                    view_cams,
                    size=size,
                    mode='bilinear',
                    align_corners=self.align_corners)
                cams = cams + (view_cams.flip(3) if flip else view_cams)
                probs = probs + view_probs
        return normalize_cams(cams), probs / (
            len(self.test_cfg['scales']) * len(flips))

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Ungated CAMs at the input size.

        Args:
            inputs: Images (B, 3, H, W).
            batch_img_metas: Unused (kept for the mmseg signature).

        Returns:
            Tensor: CAMs (B, N, H, W) in [0, 1].
        """
        return self.inference(inputs)[0]

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Gated CAMs and their arg-max at the original image size.

        Args:
            inputs: Images (B, 3, H, W).
            data_samples: Samples with image metas (and ``img_labels`` when
                ``test_cfg.use_gt_labels``); None for bare tensors.

        Returns:
            list[SegDataSample]: With ``seg_logits`` (N, H, W) gated CAMs in
            [0, 1] and ``pred_sem_seg`` (1, H, W), plus ``cls_probs`` (N,)
            and ``cam_labels`` (N,), the labels used for gating, in the
            metainfo.

        Raises:
            KeyError: If ``use_gt_labels`` is set and ``img_labels`` is
                missing.
        """
        cams, probs = self.inference(inputs)
        if self.test_cfg['use_gt_labels']:
            if data_samples is None:
                raise KeyError('CAMSegmentor: test_cfg.use_gt_labels needs '
                               "data samples with 'img_labels'")
            keep = stack_img_labels(data_samples, self.num_classes,
                                    inputs.device).bool()
        else:
            keep = labels_from_probs(probs, self.test_cfg['cls_thresh'])
            if not self._gating_logged:
                print_log(
                    'CAMSegmentor: CAMs are gated by the predicted image '
                    'labels (probability > test_cfg.cls_thresh='
                    f"{self.test_cfg['cls_thresh']}, top class if none); set "
                    'test_cfg.use_gt_labels=True to gate by the ground truth.',
                    logger='current')
                self._gating_logged = True
        results = self.postprocess_result(gate_cams(cams, keep), data_samples)
        for result, sample_keep, sample_probs in zip(results, keep, probs):
            result.pred_sem_seg = PixelData(
                data=gated_argmax(result.seg_logits.data, sample_keep))
            result.set_metainfo(
                dict(
                    cls_probs=sample_probs.detach().cpu().numpy(),
                    cam_labels=sample_keep.long().cpu().numpy()))
        return results
