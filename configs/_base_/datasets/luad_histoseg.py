# LUAD-HistoSeg (TE, NEC, LYM, TAS; mask index 4 = background: ignored in
# training, kept in val / test for the background_as_error protocol).
# Same layout, pipelines and loaders as BCSS-WSSS; stage-2 override: see
# bcss_wsss.py.
_base_ = './bcss_wsss.py'

dataset_type = 'LUADHistoSegDataset'
data_root = 'data/LUAD-HistoSeg'
# The dataset states no µm per pixel; set it here (or pass --model-mpp to
# tools/infer_slide.py) before segmenting whole slides.
train_mpp = None
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
train_dataloader_pseudo = dict(
    dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
