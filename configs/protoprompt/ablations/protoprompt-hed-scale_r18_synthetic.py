# Stain-augmentation ablation: protoprompt_r18_synthetic.py with a
# scale-only HED jitter: each stain's amount times U(0.7, 1.3), a shift of
# at most 0.01 OD (the HED-strong shift of 0.2 OD tints even the glass),
# instead of the bases' HED-light 0.05 (`make stain-robustness`).
_base_ = '../protoprompt_r18_synthetic.py'
hed_scale = dict(type='RandomHEDJitter', scale_sigma=0.3, shift_sigma=0.01)
train_dataloader = dict(dataset=dict(pipeline=[
    hed_scale if step['type'] == 'RandomHEDJitter' else step
    for step in _base_.train_pipeline_pseudo
]))
