# Stain-augmentation ablation: protoprompt_r18_synthetic.py with Tellez et
# al.'s "HED-strong" jitter (scale and shift half-width 0.2) instead of the
# bases' "HED-light" 0.05 (`make stain-robustness`).
_base_ = '../protoprompt_r18_synthetic.py'
hed_strong = dict(type='RandomHEDJitter', scale_sigma=0.2, shift_sigma=0.2)
train_dataloader = dict(dataset=dict(pipeline=[
    hed_strong if step['type'] == 'RandomHEDJitter' else step
    for step in _base_.train_pipeline_pseudo
]))
