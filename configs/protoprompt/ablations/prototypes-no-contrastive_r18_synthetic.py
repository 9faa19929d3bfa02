# Ablation: prototype prompting without the prototype-contrastive loss.
_base_ = ['../protoprompt_r18_synthetic.py']
model = dict(
    decode_head=dict(loss_decode=[
        dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
             avg_non_ignore=True),
        dict(type='RegionConsistencyLoss', loss_weight=0.2),
    ]))
