# ResNet-18 (V1c, CPU-sized) backbone and data pre-processor shared by the
# stage-1 CAM models and the stage-2 segmentor; they add type, neck and head.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)
model = dict(
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
        contract_dilation=True))
