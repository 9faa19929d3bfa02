# Stage 1 (PBIP prototype CAMs on ResNet-18) on your own patches: copy this
# file, set the classes, data_root and schedule. Layout and manifest formats:
# configs/_base_/datasets/manifest.py.
_base_ = [
    '../_base_/models/protocam_r18.py', '../_base_/datasets/manifest.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_short.py'
]
classes = ('tumour', 'stroma', 'necrosis')  # in the order of the 0/1 flags
data_root = 'data/my_patches'  # train.csv, val.csv, test.csv, images, masks
model = dict(decode_head=dict(num_classes=len(classes)))
patches = dict(data_root=data_root, metainfo=dict(classes=classes))
train_dataloader = dict(dataset=patches)
val_dataloader = dict(dataset=patches)
test_dataloader = dict(dataset=patches)
train_cfg = dict(max_iters=2000, val_interval=500)
