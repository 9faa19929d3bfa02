# Stage-1 prototype-CAM model of PBIP's code (model/model.py, its BCSS
# config.yaml): MiT-B1 with patch-embedding strides 4/2/2/1 (stage 4 at
# stride 16: 14 x 14 CAMs at 224) under the 4-level prototype-CAM head of
# protocam_r18.py (K = 3, per-level projection MLPs, BCE weights
# 0/0.1/1/1, fusion 0/0.3/0.3/0.4, mask-guided contrastive loss), with
# PBIP's H&E input normalisation.
_base_ = ['./protocam_r18.py', './mit-b1.py']
model = dict(
    data_preprocessor=dict(**_base_.he_normalisation),
    backbone=dict(_base_.mit_b1, _delete_=True, strides=[4, 2, 2, 1]),
    decode_head=dict(in_channels=[64, 128, 320, 512]))
