# Stage-2 segmentor on MiT-B1 (SegFormer's encoder, strides 4/2/2/2):
# PrototypeBank + PromptFusionHead of protoprompt_r18.py on the MiT levels,
# with the H&E input normalisation of the MiT stage 1 (protocam_mit-b1.py),
# whose weights it can start from.
_base_ = ['./protoprompt_r18.py', './mit-b1.py']
model = dict(
    data_preprocessor=dict(**_base_.he_normalisation),
    backbone=dict(_base_.mit_b1, _delete_=True),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(in_channels=[128, 320, 512]))
