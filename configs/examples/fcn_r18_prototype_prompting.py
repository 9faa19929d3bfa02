# Prototype prompting dropped into mmseg's own FCN ResNet-18 Cityscapes config:
# only the segmentor type, the neck and the decode head change; the stock
# auxiliary FCN head keeps its in_index because PrototypeBank returns the
# backbone levels first.
_base_ = 'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['protoprompt_mm'], allow_failed_imports=False)
default_scope = 'mmseg'
# mmseg's base names model.pretrained='open-mmlab://resnet18_v1c' (a
# download): here None, and backbone weights only from a local file through
# `pretrained` (our tools' load_config makes it model.backbone.init_cfg).
pretrained = None
model = dict(
    type='ProtoPromptSegmentor',
    pretrained=None,
    neck=dict(
        type='PrototypeBank',
        in_channels=[64, 128, 256, 512],
        in_index=[3],
        num_classes=19,
        embed_dim=64,
        num_prototypes=4,
        update_mode='momentum',
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(
        _delete_=True,
        type='PromptFusionHead',
        in_channels=512,
        in_index=3,
        channels=128,
        embed_dim=64,
        num_attn_heads=4,
        num_classes=19,
        dropout_ratio=0.1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=[
            dict(type='CrossEntropyLoss', avg_non_ignore=True),
            dict(type='PrototypeContrastiveLoss', loss_weight=0.1),
            dict(type='RegionConsistencyLoss', loss_weight=0.1),
        ]))
# mmseg's OptimWrapper (SGD) with the cross-rank NaN/Inf loss check.
optim_wrapper = dict(type='FiniteLossOptimWrapper')
