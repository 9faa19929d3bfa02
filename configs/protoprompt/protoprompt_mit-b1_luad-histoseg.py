# Stage 2 on LUAD-HistoSeg (data/LUAD-HistoSeg), SegFormer-style: MiT-B1 +
# prototype prompting (protoprompt_mit-b1.py) trained on the pseudo-masks
# of stage1_protocam_mit-b1_luad-histoseg.py with SegFormer's AdamW and
# paramwise_cfg (schedule_segformer_20k.py).
_base_ = [
    '../_base_/models/protoprompt_mit-b1.py',
    '../_base_/datasets/luad_histoseg.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_segformer_20k.py',
]
train_dataloader = _base_.train_dataloader_pseudo
# Backbone weights from a local file in our keys (tools/convert_weights.py
# --from mit), or None: random init, no download. Set it here, in a
# child config or by --cfg-options pretrained=PATH: load_config makes it
# the backbone's init_cfg once every file is merged (README).
pretrained = None
# The stage-1 checkpoint (its backbone; the CAM head is skipped), loaded
# after pretrained, e.g. --cfg-options load_from=$(cat W/last_checkpoint)
# with W the stage-1 work dir. None: no stage-1 weights.
load_from = None
