# MiT-B1 (SegFormer's encoder, embed dims 64/128/320/512) as mmseg's
# MixVisionTransformer, shared by the MiT models of stage 1
# (protocam_mit-b1.py) and stage 2 (protoprompt_mit-b1.py), which take it as
# model.backbone. No init_cfg: pretrained weights come from a config's
# `pretrained` variable (see configs/protoprompt/*mit-b1*.py).
mit_b1 = dict(
    type='MixVisionTransformer',
    in_channels=3,
    embed_dims=64,
    num_stages=4,
    num_layers=[2, 2, 2, 2],
    num_heads=[1, 2, 5, 8],
    patch_sizes=[7, 3, 3, 3],
    strides=[4, 2, 2, 2],
    sr_ratios=[8, 4, 2, 1],
    out_indices=(0, 1, 2, 3),
    mlp_ratio=4,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.1)
# PBIP's input normalisation (utils/trainutils.py get_mean_std: H&E
# statistics, 0-1 scale, applied to cv2's B, G, R channels), here x 255 and
# in R, G, B order, since the data pre-processor hands the network RGB
# (bgr_to_rgb=True), the order the ImageNet MiT weights were trained on.
he_normalisation = dict(
    mean=[180.089, 121.868, 170.318], std=[50.541, 57.540, 44.283])
