# Stage 2, full model, on LUAD-HistoSeg (data/LUAD-HistoSeg; classes TE, NEC,
# LYM, TAS), pseudo-masks from stage1_protocam_r18_luad-histoseg.py.
_base_ = [
    '../_base_/models/protoprompt_r18.py',
    '../_base_/datasets/luad_histoseg.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_short.py',
]
# Backbone weights from a local file in our keys (tools/convert_weights.py
# --from mmpretrain), or None: random init, no download. Set it here, in a
# child config or by --cfg-options pretrained=PATH: load_config makes it
# the backbone's init_cfg once every file is merged (README).
pretrained = None
train_dataloader = _base_.train_dataloader_pseudo
# Start from the stage-1 weights (the backbone; keys that stage 2 lacks are
# skipped): set load_from once, here or on the command line, e.g.
#   --cfg-options load_from=$(cat W/last_checkpoint)
# with W the stage-1 work dir (work_dirs/stage1_protocam_r18_luad-histoseg
# when trained without --work-dir). tools/run_pipeline.py passes it itself.
# None: no stage-1 weights.
load_from = None
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(
    checkpoint=dict(interval=2000, save_best='mIoU', max_keep_ckpts=2))
