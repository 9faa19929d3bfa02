# Upper bound: the full segmentor trained on the ground-truth training masks
# (the synthetic generator writes them to <data_root>/training_gt).
_base_ = ['../protoprompt_r18_synthetic.py']
train_dataloader = dict(dataset=dict(pseudo_mask_dir='training_gt'))
