# Synthetic H&E patches (BCSS-WSSS layout and classes), the embedded default
# data; generate with
#     python tools/make_synthetic_histo.py --out data/synthetic_histo --seed 0
# Stage-2 override: see bcss_wsss.py.
_base_ = './bcss_wsss.py'

data_root = 'data/synthetic_histo'
train_dataloader = dict(dataset=dict(data_root=data_root))
train_dataloader_pseudo = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
