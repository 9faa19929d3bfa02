# SegFormer's optimisation (mmseg's segformer_mit-b0 configs) for the MiT
# stage 2: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, no decay
# on 'pos_block' and 'norm' parameters, 10 x lr for the randomly
# initialised parts ('head'; here also the prototype 'neck', which SegFormer
# does not have); 1500 iterations of linear warmup from 1e-6 x lr, then
# poly decay with power 1 to 0. 20k iterations of batch 8 (about 7 epochs
# of BCSS-WSSS) instead of SegFormer's 160k of batch 16 on ADE20K.
_base_ = './schedule_short.py'
# Overriding train_cfg.max_iters, set param_scheduler.1.end to the same
# value: it was evaluated here.
max_iters = 20000
warmup_iters = 1500
optimizer = dict(
    type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
optim_wrapper = dict(
    optimizer=optimizer,
    paramwise_cfg=dict(
        custom_keys=dict(
            pos_block=dict(decay_mult=0.0),
            norm=dict(decay_mult=0.0),
            head=dict(lr_mult=10.0),
            neck=dict(lr_mult=10.0))))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=2000)
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    checkpoint=dict(interval=2000, save_best='mIoU', max_keep_ckpts=2))
