# BCSS-WSSS (TUM, STR, LYM, NEC; mask index 4 = background: ignored in
# training, kept in val / test for the background_as_error protocol).
#
# Stage 1 trains on image-level labels only (`train_dataloader`). Stage 2
# trains on pseudo masks with one assignment in the stage-2 config:
#
#     train_dataloader = _base_.train_dataloader_pseudo
#
# which reads the masks from `pseudo_mask_dir` (default `pseudo_masks`,
# absolute or relative to `data_root`, same base names as the training
# images, palette PNGs like the GT). Another folder:
#
#     train_dataloader = dict(dataset=dict(
#         pseudo_mask_dir='/abs/path/pseudo_masks',
#         pipeline=_base_.train_pipeline_pseudo))
#
# To run without worker processes set both `num_workers=0` and
# `persistent_workers=False` in a dataloader.
dataset_type = 'BCSSWSSSDataset'
data_root = 'data/BCSS-WSSS'
# The class-aware transforms (LoadImageLevelLabels, LoadHistoAnnotations)
# take num_classes and background_index from the dataset's metainfo classes.
crop_size = (224, 224)
# µm per pixel of the training patches (BCSS-WSSS: 0.25, scanned at 40x):
# whole slides are read at this resolution (tools/infer_slide.py).
train_mpp = 0.25
seg_meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                 'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                 'reduce_zero_label', 'img_labels')
# Stain augmentation: per-stain scale and shift of the H, E, DAB
# concentrations (RandomHEDJitter; Tellez et al. 2018 / 2019: "HED-light"
# sigma 0.05, "HED-strong" 0.2), first in both training pipelines, before
# the RGB distortion; val / test stay without. Another strength, or none:
# see configs/protoprompt/ablations/*stain-aug* (the training pipelines of
# a config with the jitter replaced or filtered out).
stain_augmentations = [
    dict(type='RandomHEDJitter', scale_sigma=0.05, shift_sigma=0.05),
]
augmentations = [
    *stain_augmentations,
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomFlip', prob=0.5, direction='vertical'),
    dict(type='RandomRotate90', prob=0.5),
    dict(
        type='PhotoMetricDistortion',
        brightness_delta=16,
        contrast_range=(0.8, 1.2),
        saturation_range=(0.8, 1.2),
        hue_delta=5),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadImageLevelLabels'),
    *augmentations,
    dict(type='PackSegInputs', meta_keys=seg_meta_keys),
]
train_pipeline_pseudo = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations'),
    dict(type='LoadImageLevelLabels'),
    *augmentations,
    dict(type='PackSegInputs', meta_keys=seg_meta_keys),
]
# Val / test masks keep background (4) apart from ignored pixels (255), for
# the metric's background_as_error protocol; training masks ignore it.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadHistoAnnotations', keep_background=True),
    dict(type='LoadImageLevelLabels'),
    dict(type='PackSegInputs', meta_keys=seg_meta_keys),
]
# `tools/test.py --tta`: tta_model (default_runtime.py, mmseg's SegTTAModel)
# averages the class scores of 3 views, as is, flipped left-right, flipped
# upside-down (each flipped back by the segmentor); then every step of the
# test pipeline after the image loading.
tta_pipeline = [
    test_pipeline[0],
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='RandomFlip', prob=0.0, direction='horizontal'),
                dict(type='RandomFlip', prob=1.0, direction='horizontal'),
                dict(type='RandomFlip', prob=1.0, direction='vertical'),
            ],
            *[[transform] for transform in test_pipeline[1:]],
        ]),
]
num_workers = 2
train_dataloader = dict(
    batch_size=8,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
train_dataloader_pseudo = dict(
    batch_size=8,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pseudo_mask_dir='pseudo_masks',
        pipeline=train_pipeline_pseudo))
val_dataloader = dict(
    batch_size=1,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        pipeline=test_pipeline))
# Plain keys (mIoU, mDice, FwIoU, IoU.<class>): GT background ignored
# (WSSS-Tissue / MLPS); background_as_error/<key>: TPRO / PBIP's protocol.
val_evaluator = dict(
    type='TissueIoUMetric',
    iou_metrics=['mIoU', 'mDice', 'FwIoU'],
    extra_protocols=['background_as_error'])
test_evaluator = val_evaluator
