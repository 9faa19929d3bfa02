# Stage 1, prototype CAMs, on BCSS-WSSS (data/BCSS-WSSS):
# ResNet-18 + PBIP multi-level prototype CAMs (protocam_r18.py) trained with
# image-level labels only.
# Validation / test score the CAMs (gated by predicted labels) with mIoU.
# Pseudo-masks for stage 2 (protoprompt_r18_bcss-wsss.py):
#   python tools/generate_pseudo_masks.py \
#       configs/protoprompt/stage1_protocam_r18_bcss-wsss.py CKPT \
#       --out data/BCSS-WSSS/pseudo_masks
_base_ = [
    '../_base_/models/protocam_r18.py',
    '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
# Backbone weights from a local file in our keys (tools/convert_weights.py
# --from mmpretrain), or None: random init, no download. Set it here, in a
# child config or by --cfg-options pretrained=PATH: load_config makes it
# the backbone's init_cfg once every file is merged (README).
pretrained = None
train_cfg = dict(max_iters=10000, val_interval=1000)
default_hooks = dict(
    checkpoint=dict(interval=1000, save_best='mIoU', max_keep_ckpts=2))
# val_evaluator / test_evaluator: the dataset base's TissueIoUMetric of the
# CAMs (mIoU, mDice, FwIoU, per-class IoU) under both protocols: GT
# background ignored (plain keys) and counted as error (background_as_error/).
# The CAM thresholds of tools/generate_pseudo_masks.py (pseudo_label_cfg,
# from the model base) were tuned on the synthetic data (no training GT
# here): check them on a few hand-labelled patches with --gt-dir, and
# override pseudo_label_cfg here, before trusting them.
