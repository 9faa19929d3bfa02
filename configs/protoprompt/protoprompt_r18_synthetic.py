# Stage 2, full model, on the synthetic H&E data: ResNet-18 + momentum
# PrototypeBank + PromptFusionHead trained on stage-1 pseudo-masks with CE,
# prototype-contrastive and region-consistency losses.
# Pseudo-masks: tools/generate_pseudo_masks.py ... \
#     --out <data_root>/pseudo_masks
# (or point train_dataloader.dataset.pseudo_mask_dir elsewhere).
_base_ = [
    '../_base_/models/protoprompt_r18.py',
    '../_base_/datasets/synthetic_histo.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
train_dataloader = _base_.train_dataloader_pseudo
# Start from the stage-1 weights (the backbone; keys that stage 2 lacks are
# skipped): set load_from once, here or on the command line, e.g.
#   --cfg-options load_from=$(cat W/last_checkpoint)
# with W the stage-1 work dir (work_dirs/stage1_protocam_r18_synthetic
# when trained without --work-dir). tools/run_pipeline.py passes it itself.
# None: no stage-1 weights.
load_from = None
train_cfg = dict(max_iters=200, val_interval=200)
