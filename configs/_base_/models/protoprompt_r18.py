# Stage-2 segmentor: ResNet-18 (CPU-sized) + PrototypeBank + PromptFusionHead.
_base_ = './resnet18_v1c.py'
norm_cfg = _base_.norm_cfg
num_classes = 4
embed_dim = 128
num_prototypes = 4
model = dict(
    type='ProtoPromptSegmentor',
    neck=dict(
        type='PrototypeBank',
        in_channels=[64, 128, 256, 512],
        in_index=[1, 2, 3],
        num_classes=num_classes,
        embed_dim=embed_dim,
        num_prototypes=num_prototypes,
        update_mode='momentum',
        momentum=0.99,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='PromptFusionHead',
        in_channels=[128, 256, 512],
        in_index=[1, 2, 3],
        input_transform='resize_concat',
        channels=128,
        embed_dim=embed_dim,
        num_attn_heads=4,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                 avg_non_ignore=True),
            dict(type='PrototypeContrastiveLoss', temperature=0.1,
                 max_pixels_per_class=256, loss_weight=0.2),
            dict(type='RegionConsistencyLoss', loss_weight=0.2),
        ]),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
