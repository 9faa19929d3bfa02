# Stain-augmentation ablation: stage1_protocam_r18_synthetic.py without the
# HED jitter in its training pipeline (`make stain-robustness`).
_base_ = '../stage1_protocam_r18_synthetic.py'
train_dataloader = dict(dataset=dict(pipeline=[
    step for step in _base_.train_pipeline
    if step['type'] != 'RandomHEDJitter'
]))
