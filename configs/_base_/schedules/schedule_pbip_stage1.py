# PBIP's stage-1 schedule (work_dirs/bcss/classification/config.yaml,
# train_stage_1.py, utils/optimizer.py): AdamW lr 5e-5, betas (0.9, 0.999),
# eps 1e-8, weight decay 1e-3 on every parameter; 8 epochs (an epoch is
# len(train_dataloader) iterations, so the count follows the dataset and
# the number of GPUs); the learning rate decays as (1 - t / T) ** 1 to 0,
# no warmup, updated every iteration; fp16 autocast with a dynamic
# GradScaler; validation, and the best checkpoint, after every epoch.
# The batch (PBIP: 10 on one GPU) is the runnable config's
# train_dataloader.batch_size; auto_scale_lr keeps lr / batch when enabled.
_base_ = './schedule_short.py'
# Overriding train_cfg.max_epochs (a child config or --cfg-options), set
# param_scheduler.0.end to the same value: it was evaluated here.
max_epochs = 8
optimizer = dict(
    type='AdamW', lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3)
optim_wrapper = dict(
    type='FiniteLossAmpOptimWrapper',
    loss_scale='dynamic',
    dtype='float16',
    optimizer=optimizer)
param_scheduler = [
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True)
]
train_cfg = dict(
    _delete_=True,
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=1)
auto_scale_lr = dict(enable=False, base_batch_size=10)
# PBIP keeps the epoch of the best validation mIoU of its 5-class confusion
# matrix (tissue predicted on background counts as an error): the dataset
# bases' TissueIoUMetric reports it as background_as_error/mIoU.
default_hooks = dict(
    logger=dict(interval=100),
    checkpoint=dict(
        by_epoch=True,
        interval=1,
        save_best='background_as_error/mIoU',
        max_keep_ckpts=2))
