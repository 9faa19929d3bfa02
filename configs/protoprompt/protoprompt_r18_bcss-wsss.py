# Stage 2, full model, on BCSS-WSSS (data/BCSS-WSSS, pseudo-masks from
# configs/protoprompt/stage1_protocam_r18_bcss-wsss.py).
_base_ = [
    '../_base_/models/protoprompt_r18.py',
    '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
train_dataloader = _base_.train_dataloader_pseudo
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(
    checkpoint=dict(interval=2000, save_best='mIoU', max_keep_ckpts=2))
