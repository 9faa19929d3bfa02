# Stage-1 prototype-CAM model as PBIP builds it (Tang et al., CVPR 2025):
# ResNet-18 (last stage at stride 16, like PBIP's MiT-B1 strides 4/2/2/1) +
# MultiLevelPrototypeCAMHead. K = 3 sub-prototypes per class, built from an
# image bank before training (PrototypeInitHook: cosine k-means of the
# single-label training images' stage-4 features) and then frozen; each of
# the 4 stages projects them with its own MLP; CAM = learnable scale (1/0.07
# at start) x cosine similarity; sub-prototypes merged by mean in training and
# softmax-weighted at test; mask-guided fg/bg contrastive loss at stage 4.
_base_ = './cam_r18.py'
num_classes = 4
model = dict(
    decode_head=dict(
        _delete_=True,
        type='MultiLevelPrototypeCAMHead',
        in_channels=[64, 128, 256, 512],
        in_index=[0, 1, 2, 3],
        num_classes=num_classes,
        num_prototypes=3,
        hidden_ratio=0.5,
        init_scale=1 / 0.07,
        learn_prototypes=False,
        merge_train='mean',
        merge_test='softmax',
        # PBIP: BCE weights l1..l4 and the fusion of CAMs 2-4 for masks.
        level_weights=[0.0, 0.1, 1.0, 1.0],
        fuse_weights=[0.0, 0.3, 0.3, 0.4],
        topk_ratio=1.0,
        loss_cls=dict(
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0,
            loss_name='loss_cls'),
        loss_contrast=dict(
            type='MaskGuidedContrastiveLoss',
            temperature=0.07,
            alpha=0.5,
            loss_weight=0.1),
        contrast_level=-1,
        align_corners=False))
# Prototypes from the image bank before the first iteration (skipped when a
# checkpoint is loaded or resumed, or init_prototypes is set).
custom_hooks = [
    dict(type='PrototypeInitHook', max_images_per_class=64, seed=0)
]
