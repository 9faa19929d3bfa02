# The synthetic stage-2 run on an mmpretrain backbone
# (type='mmpretrain.ResNet'):
# the neck, head and losses are backbone-agnostic.
_base_ = [
    '../_base_/models/protoprompt_mmpretrain-r18.py',
    '../_base_/datasets/synthetic_histo.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
train_dataloader = _base_.train_dataloader_pseudo
train_cfg = dict(max_iters=200, val_interval=200)
