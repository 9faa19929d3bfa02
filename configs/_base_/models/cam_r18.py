# Stage-1 CAM model: ResNet-18 (CPU-sized) + plain CAMHead, trained with
# image-level labels only (multi-label BCE).
_base_ = './resnet18_v1c.py'
num_classes = 4
model = dict(
    type='CAMSegmentor',
    # Last stage at stride 16 (dilated), as PBIP's MiT-B1 strides 4/2/2/1:
    # 14 x 14 CAMs at 224 instead of 7 x 7, for about 6% more time per step.
    backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
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
# CAM threshold of tools/generate_pseudo_masks.py: a pixel gets its top
# class when that CAM >= fg_thresh ('fixed'; 'adaptive': >= fg_thresh x the
# map's peak, PBIP's alpha), else ignore (255, not trained on).
# Set on the synthetic data; the stage-1 configs may override it.
pseudo_label_cfg = dict(fg_thresh=0.25, thresh_mode='fixed')
