# Stage-2 segmentor on an mmpretrain backbone, built through its registry
# scope: the prototype neck and head do not depend on mmseg's backbones.
_base_ = ['./protoprompt_r18.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNet',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        style='pytorch',
        norm_cfg=dict(type='BN', requires_grad=True)))
