# Stage 1, plain CAMs, on the synthetic H&E data: ResNet-18 + CAMHead
# (stages 3 and 4 fused) trained with image-level labels only. Validation
# scores the CAMs (gated by predicted labels) with mIoU.
# Pseudo-masks for stage 2:
#   python tools/generate_pseudo_masks.py \
#       configs/protoprompt/stage1_cam_r18_synthetic.py CKPT \
#       --out data/synthetic_histo/pseudo_masks
_base_ = [
    '../_base_/models/cam_r18.py',
    '../_base_/datasets/synthetic_histo.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
# ~3 min on 2 CPU cores at 224 x 224, batch 8.
train_cfg = dict(max_iters=300, val_interval=150)
default_hooks = dict(checkpoint=dict(interval=300))
# val_evaluator / test_evaluator: the dataset base's TissueIoUMetric of the
# CAMs (mIoU, mDice, FwIoU, per-class IoU) under both protocols: GT
# background ignored (plain keys) and counted as error (background_as_error/).
