# Iteration-based AdamW schedule; max_iters / val_interval are overridden by
# the runnable configs (short on CPU, longer on the real datasets).
optimizer = dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4)
# A NaN/Inf loss on any rank stops every rank, naming the loss terms and the
# iteration (on_nonfinite='skip' skips the step on every rank instead).
optim_wrapper = dict(
    type='FiniteLossOptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    on_nonfinite='raise')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=20, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=200)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    # Macenko stain target of the training images, stored in every
    # checkpoint (meta['stain_target']) for --stain-norm CKPT at inference.
    stain_target=dict(type='StainTargetHook', num_images=64))
