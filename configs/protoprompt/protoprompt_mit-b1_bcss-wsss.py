# Stage 2 on BCSS-WSSS with a MiT-B1 (SegFormer) backbone. Pretrained MiT
# weights only from a local file:
#   --cfg-options model.backbone.init_cfg.type=Pretrained \
#                 model.backbone.init_cfg.checkpoint=/path/mit_b1.pth
_base_ = [
    '../_base_/models/protoprompt_mit-b1.py',
    '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
train_dataloader = _base_.train_dataloader_pseudo
optimizer = dict(lr=6e-5, weight_decay=0.01)
optim_wrapper = dict(optimizer=optimizer)
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(
    checkpoint=dict(interval=2000, save_best='mIoU', max_keep_ckpts=2))
