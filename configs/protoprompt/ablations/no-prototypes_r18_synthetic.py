# Ablation: no prototypes. Same backbone, same pseudo-masks, same CE and
# region-consistency losses, but no PrototypeBank and a plain FCN head.
_base_ = ['../protoprompt_r18_synthetic.py']
model = dict(
    type='EncoderDecoder',
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=[128, 256, 512],
        in_index=[1, 2, 3],
        input_transform='resize_concat',
        channels=128,
        num_convs=2,
        kernel_size=3,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=4,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                 avg_non_ignore=True),
            dict(type='RegionConsistencyLoss', loss_weight=0.2),
        ]))
