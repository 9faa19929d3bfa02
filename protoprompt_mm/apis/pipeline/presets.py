"""What the pipeline runs: variants (stage-1 + stage-2 config pairs) and
the presets that group them per dataset.

Config paths are relative to the repository root, where every step runs.
"""
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from .step_runner import PipelineError

CONFIG_DIR = osp.join('configs', 'protoprompt')
ABLATION_DIR = osp.join(CONFIG_DIR, 'ablations')


@dataclass
class Variant:
    """A stage-1 + stage-2 pair.

    Attributes:
        stage1: Stage-1 (CAM) config; stage 2 starts from its weights.
        stage2: Stage-2 config.
        pseudo_masks: Stage 2 trains on the stage-1 pseudo-masks; False:
            on the ground-truth training masks (its config reads them).
    """
    stage1: str
    stage2: str
    pseudo_masks: bool = True


@dataclass
class Preset:
    """What the pipeline runs for one dataset.

    Attributes:
        variants: Variant name -> stage-1 + stage-2 pair.
        default_variants: Variants run when none are named.
        classes: Class names, in label order.
        synthetic: Generate synthetic data when the data root is missing.
        prototype_encoders: Stage-1 config -> the stage-1 config whose
            trained checkpoint embeds its image bank (``PrototypeInitHook``
            encoder, the hook being its first ``custom_hooks`` entry), as
            PBIP takes its prototypes from a separately trained encoder.
        stage1_options / stage2_options: ``--cfg-options`` of the preset.
    """
    variants: Dict[str, Variant]
    default_variants: List[str]
    classes: List[str]
    synthetic: bool = False
    prototype_encoders: Dict[str, str] = field(default_factory=dict)
    stage1_options: List[str] = field(default_factory=list)
    stage2_options: List[str] = field(default_factory=list)


def config_name(config: str) -> str:
    """A config's file name without ``.py``: the name of its runs."""
    return osp.splitext(osp.basename(config))[0]


def full_config(dataset: str, backbone: str = 'r18') -> str:
    """The stage-2 config of the method for ``dataset``."""
    return osp.join(CONFIG_DIR, f'protoprompt_{backbone}_{dataset}.py')


def ablation_variants(dataset: str) -> Dict[str, Variant]:
    """The ablation chain: what each component of the method buys."""
    cam = osp.join(CONFIG_DIR, f'stage1_cam_r18_{dataset}.py')
    protocam = osp.join(CONFIG_DIR, f'stage1_protocam_r18_{dataset}.py')
    protocam_no_contrast = osp.join(
        ABLATION_DIR, f'stage1_protocam-no-contrastive_r18_{dataset}.py')
    plain = osp.join(ABLATION_DIR, f'plain-fcn_r18_{dataset}.py')
    return {
        'cam': Variant(cam, plain),
        'prototypes': Variant(protocam_no_contrast, plain),
        'prototypes_contrastive': Variant(protocam, plain),
        'full': Variant(protocam, full_config(dataset)),
        'fully_supervised': Variant(
            protocam,
            osp.join(ABLATION_DIR, f'fully-supervised_r18_{dataset}.py'),
            pseudo_masks=False),
    }


def stain_ablation_variants(dataset: str) -> Dict[str, Variant]:
    """The full variant with each stain augmentation of the ablation."""
    def pair(name: str) -> Variant:
        return Variant(
            osp.join(ABLATION_DIR, f'stage1_protocam-{name}_r18_{dataset}.py'),
            osp.join(ABLATION_DIR, f'protoprompt-{name}_r18_{dataset}.py'))

    return {
        'no_stain_aug': pair('no-stain-aug'),
        'hed_light': ablation_variants(dataset)['full'],
        'hed_strong': pair('hed-strong'),
        'hed_scale': pair('hed-scale'),
    }


def prototype_encoders(dataset: str) -> Dict[str, str]:
    """Without pretrained weights, the prototype stage 1 embeds its image
    bank with the trained plain-CAM stage 1 (PBIP: a frozen MedCLIP)."""
    cam = osp.join(CONFIG_DIR, f'stage1_cam_r18_{dataset}.py')
    return {
        osp.join(CONFIG_DIR, f'stage1_protocam_r18_{dataset}.py'): cam,
        osp.join(ABLATION_DIR,
                 f'stage1_protocam-no-contrastive_r18_{dataset}.py'): cam,
    }


def real_data_preset(dataset: str, classes: List[str],
                     backbone: str = 'r18') -> Preset:
    """The full variant on a real dataset with the given stage-1 backbone."""
    stage1 = osp.join(CONFIG_DIR, f'stage1_protocam_{backbone}_{dataset}.py')
    return Preset(
        variants={'full': Variant(stage1, full_config(dataset, backbone))},
        default_variants=['full'],
        classes=classes)


BCSS_CLASSES = ['TUM', 'STR', 'LYM', 'NEC']
LUAD_CLASSES = ['TE', 'NEC', 'LYM', 'TAS']
PRESETS = {
    # make demo: the full variant only, its prototypes embedded by its own
    # (untrained) backbone (no plain-CAM stage 1 to train first).
    'demo': Preset(
        variants=ablation_variants('synthetic'),
        default_variants=['full'],
        classes=BCSS_CLASSES,
        synthetic=True),
    # make ablation: every variant; the prototype stage 1s take their image
    # bank from the trained plain-CAM stage 1 of the same seed.
    'ablation': Preset(
        variants=ablation_variants('synthetic'),
        default_variants=list(ablation_variants('synthetic')),
        classes=BCSS_CLASSES,
        synthetic=True,
        prototype_encoders=prototype_encoders('synthetic')),
    # make stain-robustness: the full variant without stain augmentation,
    # with the bases' HED-light jitter, with HED-strong and with a
    # scale-only jitter; prototypes embedded as in the demo.
    'stain': Preset(
        variants=stain_ablation_variants('synthetic'),
        default_variants=list(stain_ablation_variants('synthetic')),
        classes=BCSS_CLASSES,
        synthetic=True),
    # Real data: ResNet-18 (CPU-sized) or PBIP's MiT-B1 stage 1 (GPU; set
    # `pretrained` with stage1_options / stage2_options).
    'bcss-wsss': real_data_preset('bcss-wsss', BCSS_CLASSES),
    'luad-histoseg': real_data_preset('luad-histoseg', LUAD_CLASSES),
    'bcss-wsss-pbip': real_data_preset('bcss-wsss', BCSS_CLASSES, 'mit-b1'),
    'luad-histoseg-pbip': real_data_preset('luad-histoseg', LUAD_CLASSES,
                                           'mit-b1'),
}
SYNTHETIC_DEFAULTS = dict(
    num_train=400, num_val=60, num_test=60, size=224, difficulty='standard')


def synthetic_settings(items: Sequence[str]) -> dict:
    """Settings of ``tools/make_synthetic_histo.py``: the defaults with
    ``key=value`` overrides.

    Args:
        items: ``key=value`` strings, keys of :data:`SYNTHETIC_DEFAULTS`.

    Returns:
        dict: Every setting, each value of its default's type.

    Raises:
        PipelineError: If a key is unknown or a value has the wrong type.
    """
    settings = dict(SYNTHETIC_DEFAULTS)
    for item in items:
        key, _, value = item.partition('=')
        if key not in settings:
            raise PipelineError(
                f'--synthetic {item}: unknown key, expected one of '
                f'{sorted(settings)}')
        try:
            settings[key] = type(settings[key])(value)
        except ValueError:
            raise PipelineError(
                f'--synthetic {item}: {key} must be a '
                f'{type(settings[key]).__name__}') from None
    return settings
