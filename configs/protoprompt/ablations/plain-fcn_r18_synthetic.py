# Ablation, stage 2: a plain segmentor. Same backbone and pseudo-masks as the
# full model, but no PrototypeBank, a plain FCN head and CE only (the
# no-prototypes config without its region-consistency loss). The variants
# cam, prototypes and prototypes_contrastive of tools/run_pipeline.py train it
# on their own stage 1's pseudo-masks.
_base_ = ['./no-prototypes_r18_synthetic.py']
model = dict(
    decode_head=dict(loss_decode=[
        dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
             avg_non_ignore=True),
    ]))
