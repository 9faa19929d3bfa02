# Stage-2 segmentor: ResNet-18 (CPU-sized) + PrototypeBank + PromptFusionHead.
norm_cfg = dict(type='BN', requires_grad=True)
num_classes = 4
embed_dim = 128
num_prototypes = 4
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)
model = dict(
    type='ProtoPromptSegmentor',
    data_preprocessor=data_preprocessor,
    # Pretrained weights only from a local path, e.g.
    # init_cfg=dict(type='Pretrained', checkpoint='/path/resnet18.pth')
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
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
