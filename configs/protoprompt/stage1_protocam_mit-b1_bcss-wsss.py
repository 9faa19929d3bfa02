# Stage 1 on BCSS-WSSS (data/BCSS-WSSS) as PBIP's code trains it: MiT-B1
# (strides 4/2/2/1) + 4-level prototype CAMs with K = 3
# (protocam_mit-b1.py), batch 10, AdamW 5e-5 / weight decay 1e-3, linear
# poly decay, 8 epochs (schedule_pbip_stage1.py), flips + RandomRotate90,
# fp16 AMP (GPU). 23422 training patches: ceil(23422 / 10) = 2343
# iterations per epoch on one GPU, 18744 in all; on N GPUs each epoch is
# split over the ranks (README: batch and learning rate on N GPUs).
# Pseudo-masks for stage 2 (protoprompt_mit-b1_bcss-wsss.py):
#   python tools/generate_pseudo_masks.py \
#       configs/protoprompt/stage1_protocam_mit-b1_bcss-wsss.py CKPT \
#       --out data/BCSS-WSSS/pseudo_masks
_base_ = [
    '../_base_/models/protocam_mit-b1.py',
    '../_base_/datasets/bcss_wsss.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_pbip_stage1.py',
]
# Backbone weights from a local file in our keys (tools/convert_weights.py
# --from mit), or None: random init, no download. Set it here, in a
# child config or by --cfg-options pretrained=PATH: load_config makes it
# the backbone's init_cfg once every file is merged (README).
pretrained = None
# PBIP's augmentation: flips + RandomRotate90, no photometric distortion;
# an epoch-based sampler, so that 8 epochs are 8 passes over the patches.
train_dataloader = dict(
    batch_size=10,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=[
        step for step in _base_.train_pipeline
        if step.type != 'PhotoMetricDistortion'
    ]))
