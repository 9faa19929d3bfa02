# Your own patches (HistoManifestDataset): image-level labels from CSV or
# JSON manifests, any classes. Same pipelines and loaders as bcss_wsss.py; a
# config on top names the classes (in flag order) and the files, e.g.
# configs/examples/stage1_protocam_r18_manifest.py. Layout under data_root:
#
#     train.csv   image,labels             (or image,<class 1>,<class 2>,...
#                 patches/p0001.png,TUM;STR    with 0 / 1 per class)
#     val.csv     same; an empty labels cell takes the classes of the mask
#     test.csv
#     patches/... the images (paths in the manifests are relative to
#                 data_root)
#     masks/<stem>.png  val / test ground truth (seg_map_pattern), palette
#                 PNGs: 0..N-1 the classes, N background, 255 ignored
#
# Stage 2 reads pseudo masks from pseudo_masks/<image path without its
# extension>.png, the names tools/generate_pseudo_masks.py writes with
# --out <data_root>/pseudo_masks: train_dataloader_pseudo, which a stage-2
# config gives its data_root and classes (`patches` of the example config):
#
#     train_dataloader = dict(
#         _base_.train_dataloader_pseudo,
#         dataset=dict(_base_.train_dataloader_pseudo.dataset, **patches))
_base_ = './bcss_wsss.py'

dataset_type = 'HistoManifestDataset'
data_root = 'data/my_patches'
# µm per pixel of your patches, for whole-slide inference (tools/
# infer_slide.py reads slides at this resolution); None until you set it.
train_mpp = None
mask_pattern = 'masks/{stem}.png'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,  # no split / pseudo_mask_dir of the folder datasets
        type=dataset_type,
        data_root=data_root,
        ann_file='train.csv',
        pipeline=_base_.train_pipeline))
train_dataloader_pseudo = dict(
    dataset=dict(
        train_dataloader['dataset'],
        data_prefix=dict(seg_map_path='pseudo_masks'),
        seg_map_pattern='{path}.png',
        pipeline=_base_.train_pipeline_pseudo))
val_dataloader = dict(
    dataset=dict(
        train_dataloader['dataset'],
        ann_file='val.csv',
        seg_map_pattern=mask_pattern,
        pipeline=_base_.test_pipeline))
test_dataloader = dict(
    dataset=dict(val_dataloader['dataset'], ann_file='test.csv'))
