# Stage-1 prototype-CAM model: ResNet-18 + learned PrototypeBank +
# PrototypeCAMHead. The CAM of a class is the cosine similarity of the pixel
# embeddings (stages 2-4 fused, stride 8) to the closest of its sub-prototypes;
# the prototypes are learned through the image-level BCE loss.
_base_ = './cam_r18.py'
norm_cfg = _base_.norm_cfg
num_classes = 4
model = dict(
    neck=dict(
        type='PrototypeBank',
        in_channels=[64, 128, 256, 512],
        in_index=[1, 2, 3],
        num_classes=num_classes,
        embed_dim=128,
        num_prototypes=4,
        update_mode='learned',
        norm_cfg=norm_cfg),
    decode_head=dict(
        _delete_=True,
        type='PrototypeCAMHead',
        num_classes=num_classes,
        init_scale=10.0,
        topk_ratio=0.25,
        loss_cls=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0,
            loss_name='loss_cls'),
        align_corners=False))
