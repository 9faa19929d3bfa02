# Stage-1 CAM model: ResNet-18 (CPU-sized) + plain CAMHead, trained with
# image-level labels only (multi-label BCE).
norm_cfg = dict(type='BN', requires_grad=True)
num_classes = 4
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)
model = dict(
    type='CAMSegmentor',
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
    decode_head=dict(
        type='CAMHead',
        # CAMs of stages 3 and 4, fused with these weights (also the weights
        # of the two levels' classification losses).
        in_channels=[256, 512],
        in_index=[2, 3],
        level_weights=[0.5, 0.5],
        topk_ratio=1.0,
        num_classes=num_classes,
        loss_cls=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0,
            loss_name='loss_cls'),
        align_corners=False),
    # Gating by predicted labels (prob > cls_thresh); pseudo-mask generation
    # switches to use_gt_labels=True.
    test_cfg=dict(mode='whole', cls_thresh=0.5, use_gt_labels=False))
