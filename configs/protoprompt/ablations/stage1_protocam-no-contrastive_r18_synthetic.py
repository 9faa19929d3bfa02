# Ablation, stage 1: PBIP's prototype CAMs without the mask-guided
# contrastive loss (BCE on the image labels only).
_base_ = ['../stage1_protocam_r18_synthetic.py']
model = dict(decode_head=dict(loss_contrast=None))
