# Stage 1, prototype CAMs, on BCSS-WSSS (data/BCSS-WSSS):
# ResNet-18 + learned PrototypeBank + PrototypeCAMHead trained with
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
model = dict(test_cfg=dict(mode='whole', cls_thresh=0.5, use_gt_labels=False))
train_cfg = dict(max_iters=10000, val_interval=1000)
default_hooks = dict(
    checkpoint=dict(interval=1000, save_best='mIoU', max_keep_ckpts=2))
# val_evaluator / test_evaluator: the dataset base's mIoU (TissueIoUMetric,
# per-class IoU included) of the CAMs; GT background is 255, so ignored.
# CAM thresholds of tools/generate_pseudo_masks.py: max CAM < bg_thresh ->
# background (4), bg_thresh..fg_thresh -> ignore (255), else the class.
# Tuned on the synthetic data (no training GT here): check on a few
# hand-labelled patches with --gt-dir before trusting them.
pseudo_label_cfg = dict(bg_thresh=0.1, fg_thresh=0.25)
