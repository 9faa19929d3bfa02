"""The whole WSSS pipeline in one command, through the project's own tools.

    python tools/run_pipeline.py --data-root DIR --work-dir W \
        [--preset demo|ablation|bcss-wsss[-pbip]|luad-histoseg[-pbip]] \
        [--variants full ...] [--seeds 0 1 2]

A variant is a stage-1 + stage-2 pair. Steps (each a subprocess of a script
in ``tools/``, with mmengine's logs): synthetic data (``demo`` preset, when
DIR is missing) -> per seed, per stage-1 config the variants use: stage-1
CAM training -> stage-1 test (CAM mIoU, gated by predicted labels) ->
pseudo-masks of the training split (and their scores where ground truth
exists) -> per variant: stage-2 training on its stage 1's pseudo-masks,
starting from the stage-1 weights, and test -> overlay pictures ->
``W/results.json`` (fractions in [0, 1]; mean and sample std over the
seeds) and ``W/results.md`` (percentages). Test runs are scored under both
protocols of ``TissueIoUMetric``: GT background ignored (the plain keys,
e.g. ``test_miou``) and counted as error (``*_background_as_error``), each
with mIoU, mDice, FwIoU and per-class IoU. A stage-1 run shared by several
variants is trained once per seed. Outputs of seed s are in ``W/seed_<s>/``.
A step that finished before with the same command, after the same runs of
the steps it depends on, is reused (its marker ``W/.steps/<name>.json``
records both); a step that re-runs makes the steps that use its output
re-run too, so an interrupted run finishes what is missing when started
again. A failed step stops the run with the step named.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
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
        default_variants: Variants run when ``--variants`` is not given.
        classes: Class names, in label order.
        synthetic: Generate synthetic data when the data root is missing.
        stage1_options / stage2_options: ``--cfg-options`` of the preset.
        prototype_encoders: Stage-1 config -> the stage-1 config whose
            trained checkpoint embeds its image bank (``PrototypeInitHook``
            encoder, the hook being its first ``custom_hooks`` entry), as
            PBIP takes its prototypes from a separately trained encoder.
    """
    variants: Dict[str, Variant]
    default_variants: List[str]
    classes: List[str]
    synthetic: bool = False
    prototype_encoders: Dict[str, str] = field(default_factory=dict)
    stage1_options: List[str] = field(default_factory=list)
    stage2_options: List[str] = field(default_factory=list)


def _ablations(dataset: str) -> Dict[str, Variant]:
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
        'full': Variant(protocam, _full_config(dataset)),
        'fully_supervised': Variant(
            protocam,
            osp.join(ABLATION_DIR, f'fully-supervised_r18_{dataset}.py'),
            pseudo_masks=False),
    }


def _stain_ablations(dataset: str) -> Dict[str, Variant]:
    """The full variant with each stain augmentation of the ablation."""
    def pair(name: str) -> Variant:
        return Variant(
            osp.join(ABLATION_DIR, f'stage1_protocam-{name}_r18_{dataset}.py'),
            osp.join(ABLATION_DIR, f'protoprompt-{name}_r18_{dataset}.py'))

    return {
        'no_stain_aug': pair('no-stain-aug'),
        'hed_light': _ablations(dataset)['full'],
        'hed_strong': pair('hed-strong'),
        'hed_scale': pair('hed-scale'),
    }


def _prototype_encoders(dataset: str) -> Dict[str, str]:
    """Without pretrained weights, the prototype stage 1 embeds its image
    bank with the trained plain-CAM stage 1 (PBIP: a frozen MedCLIP)."""
    cam = osp.join(CONFIG_DIR, f'stage1_cam_r18_{dataset}.py')
    return {
        osp.join(CONFIG_DIR, f'stage1_protocam_r18_{dataset}.py'): cam,
        osp.join(ABLATION_DIR,
                 f'stage1_protocam-no-contrastive_r18_{dataset}.py'): cam,
    }


def _full_config(dataset: str, backbone: str = 'r18') -> str:
    return osp.join(CONFIG_DIR, f'protoprompt_{backbone}_{dataset}.py')


def _real_data_preset(dataset: str, classes: List[str],
                      backbone: str = 'r18') -> Preset:
    stage1 = osp.join(CONFIG_DIR, f'stage1_protocam_{backbone}_{dataset}.py')
    return Preset(
        variants={'full': Variant(stage1, _full_config(dataset, backbone))},
        default_variants=['full'],
        classes=classes)


BCSS_CLASSES = ['TUM', 'STR', 'LYM', 'NEC']
LUAD_CLASSES = ['TE', 'NEC', 'LYM', 'TAS']
PRESETS = {
    # make demo: the full variant only, its prototypes embedded by its own
    # (untrained) backbone, to stay under 10 minutes.
    'demo': Preset(
        variants=_ablations('synthetic'),
        default_variants=['full'],
        classes=BCSS_CLASSES,
        synthetic=True),
    # make ablation: every variant; the prototype stage 1s take their image
    # bank from the trained plain-CAM stage 1 of the same seed.
    'ablation': Preset(
        variants=_ablations('synthetic'),
        default_variants=list(_ablations('synthetic')),
        classes=BCSS_CLASSES,
        synthetic=True,
        prototype_encoders=_prototype_encoders('synthetic')),
    # make stain-robustness: the full variant without stain augmentation,
    # with the bases' HED-light jitter, with HED-strong and with a
    # scale-only jitter; prototypes embedded as in the demo.
    'stain': Preset(
        variants=_stain_ablations('synthetic'),
        default_variants=list(_stain_ablations('synthetic')),
        classes=BCSS_CLASSES,
        synthetic=True),
    # Real data: ResNet-18 (CPU-sized) or PBIP's MiT-B1 stage 1 (GPU; set
    # `pretrained` with --stage1-options / --stage2-options).
    'bcss-wsss': _real_data_preset('bcss-wsss', BCSS_CLASSES),
    'luad-histoseg': _real_data_preset('luad-histoseg', LUAD_CLASSES),
    'bcss-wsss-pbip': _real_data_preset('bcss-wsss', BCSS_CLASSES, 'mit-b1'),
    'luad-histoseg-pbip': _real_data_preset('luad-histoseg', LUAD_CLASSES,
                                            'mit-b1'),
}
SYNTHETIC_DEFAULTS = dict(
    num_train=400, num_val=60, num_test=60, size=224, difficulty='standard')
# Protocols of a test run: suffix of its names in results.json -> key prefix
# of TissueIoUMetric (the dataset bases' evaluator reports both).
PROTOCOLS = {'': '', '_background_as_error': 'background_as_error/'}
# Scores of a test run: name in results.json -> TissueIoUMetric key.
RUN_METRICS = {'miou': 'mIoU', 'mdice': 'mDice', 'fwiou': 'FwIoU'}


def run_score_keys(stage: str) -> Dict[str, str]:
    """results.json names of a test run's scores (e.g. ``test_miou``,
    ``test_miou_background_as_error``) -> their TissueIoUMetric keys."""
    return {
        f'{stage}_{name}{suffix}': prefix + key
        for suffix, prefix in PROTOCOLS.items()
        for name, key in RUN_METRICS.items()
    }


# What the pipeline reports per variant and seed (fractions in [0, 1]):
# numbers, and per-class IoU (class -> number).
STAGE1_SCORES = (*run_score_keys('stage1_cam'), 'pseudo_mask_miou',
                 'pseudo_mask_precision_miou', 'pseudo_mask_coverage')
TEST_SCORES = tuple(run_score_keys('test'))
# The final model on the test split re-stained in HED space (tools/test.py
# --stain-shift; with --stain-norm also Macenko-normalised towards the stain
# target its checkpoint carries): mIoU per condition (condition -> number,
# 'clean' first) and the worst change from clean (a number, <= 0 when every
# condition loses).
STAIN_RUNS = {'stain_shift': [], 'stain_norm': ['--stain-norm']}
STAIN_CONDITION_SCORES = tuple(f'{run}_miou' for run in STAIN_RUNS)
STAIN_SCORES = tuple(f'{run}_worst_change' for run in STAIN_RUNS)
SCORES = STAGE1_SCORES + TEST_SCORES + STAIN_SCORES
STAGE1_CLASS_SCORES = tuple(f'stage1_cam_iou{suffix}' for suffix in PROTOCOLS)
TEST_CLASS_SCORES = tuple(f'test_iou{suffix}' for suffix in PROTOCOLS)


class PipelineError(RuntimeError):
    """A step failed; the message names it."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Stage 1 -> pseudo-masks -> stage 2 -> test, one command')
    parser.add_argument('--data-root', required=True,
                        help='dataset in the BCSS-WSSS / LUAD-HistoSeg layout')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    parser.add_argument(
        '--variants', nargs='+',
        help='variants (names of the preset, or stage-2 config paths, which '
        "then start from the stage 1 of the preset's full variant)")
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='training seeds; each runs the whole chain')
    parser.add_argument('--data-seed', type=int, default=0,
                        help='seed of the generated synthetic data')
    parser.add_argument('--stage1-options', nargs='*', default=[],
                        action='extend',
                        help='extra --cfg-options for stage 1 (k=v ...)')
    parser.add_argument('--stage2-options', nargs='*', default=[],
                        action='extend',
                        help='extra --cfg-options for every stage-2 variant')
    parser.add_argument(
        '--pseudo-mask-args', default='',
        help='extra arguments of generate_pseudo_masks.py, one string, e.g. '
        '"--scales 1.0 --no-flip --fg-thresh 0.2"')
    parser.add_argument('--synthetic', nargs='*', default=[],
                        action='extend',
                        help='generator settings when data is generated, '
                        'e.g. num_train=200 size=160 difficulty=hard (a '
                        'repeated flag adds to the list; so do --stage*-'
                        'options)')
    parser.add_argument(
        '--stain-norm', action='store_true',
        help='also test the final models on the stain-shifted test split '
        'Macenko-normalised towards the stain their checkpoints carry')
    parser.add_argument('--num-visualize', type=int, default=4,
                        help='test patches drawn as overlay panels')
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct, got {args.seeds}')
    return args


def config_name(config: str) -> str:
    """A config's file name without ``.py``: the name of its runs."""
    return osp.splitext(osp.basename(config))[0]


class Pipeline:
    """Runs the steps for one data root and work dir."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.preset = PRESETS[args.preset]
        self.data_root = osp.abspath(args.data_root)
        self.work_dir = osp.abspath(args.work_dir)
        self.marker_dir = osp.join(self.work_dir, '.steps')
        os.makedirs(self.marker_dir, exist_ok=True)
        self.variants = {
            name: self.variant(name)
            for name in args.variants or self.preset.default_variants
        }

    # ------------------------------------------------------------ running
    def marker_path(self, name: str) -> str:
        return osp.join(self.marker_dir, f'{name}.json')

    def read_marker(self, name: str) -> dict:
        marker = self.marker_path(name)
        if not osp.isfile(marker):
            return {}
        with open(marker) as f:
            return json.load(f)

    def run_step(self,
                 name: str,
                 cmd: List[str],
                 outputs: List[str],
                 after: Sequence[str] = ()) -> None:
        """Run ``cmd`` unless an earlier identical run left its outputs.

        Args:
            name: Step name (marker ``W/.steps/<name>.json``).
            cmd: The command.
            outputs: Paths the step must write.
            after: Steps whose outputs this one reads: it is reused only if
                they are the same runs as when it last ran.
        """
        upstream = {step: self.read_marker(step).get('run') for step in after}
        marker = self.read_marker(name)
        if marker.get('cmd') == cmd and marker.get(
                'upstream') == upstream and all(
                    osp.exists(p) for p in outputs):
            print(f'[pipeline] {name}: reusing {outputs[0]}', flush=True)
            return
        print(f'[pipeline] {name}: {" ".join(cmd)}', flush=True)
        start = time.time()
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [REPO_ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
        if proc.returncode != 0:
            raise PipelineError(
                f'step "{name}" failed with exit code {proc.returncode}: '
                f'{" ".join(cmd)}')
        missing = [p for p in outputs if not osp.exists(p)]
        if missing:
            raise PipelineError(
                f'step "{name}" finished but did not write {missing}')
        with open(self.marker_path(name), 'w') as f:
            json.dump(
                dict(
                    cmd=cmd,
                    upstream=upstream,
                    run=uuid.uuid4().hex,
                    seconds=round(time.time() - start, 1)), f)

    def tool(self, script: str, *args: str) -> List[str]:
        return [sys.executable, osp.join(REPO_ROOT, 'tools', script), *args]

    def data_options(self) -> List[str]:
        loaders = ['train_dataloader', 'val_dataloader', 'test_dataloader']
        return [f'{loader}.dataset.data_root={self.data_root}'
                for loader in loaders]

    def variant(self, name: str) -> Variant:
        if name in self.preset.variants:
            return self.preset.variants[name]
        if osp.isfile(name) and 'full' in self.preset.variants:
            return Variant(self.preset.variants['full'].stage1, name)
        raise PipelineError(
            f'unknown variant {name!r}: expected one of '
            f'{sorted(self.preset.variants)} or a stage-2 config file')

    # -------------------------------------------------------------- steps
    def ensure_data(self) -> None:
        if osp.isdir(self.data_root):
            return
        if not self.preset.synthetic:
            raise PipelineError(
                f'step "data" failed: --data-root {self.data_root} does not '
                f'exist (preset {self.args.preset} needs the real dataset)')
        settings = dict(SYNTHETIC_DEFAULTS)
        for item in self.args.synthetic:
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
        cmd = self.tool('make_synthetic_histo.py', '--out', self.data_root,
                        '--seed', str(self.args.data_seed))
        for key, value in settings.items():
            cmd += [f'--{key.replace("_", "-")}', str(value)]
        self.run_step('data', cmd, [osp.join(self.data_root, 'training')])

    def train(self, step: str, work: str, config: str, options: List[str],
              seed: int, after: Sequence[str] = ('data', )) -> str:
        cmd = self.tool('train.py', config, '--work-dir', work,
                        '--cfg-options', f'randomness.seed={seed}', *options)
        self.run_step(f'{step}_train', cmd,
                      [osp.join(work, 'last_checkpoint')], after)
        with open(osp.join(work, 'last_checkpoint')) as f:
            return f.read().strip()

    def test(self, step: str, work: str, config: str, checkpoint: str,
             options: List[str]) -> Dict[str, float]:
        out = osp.join(work, 'test')
        cmd = self.tool('test.py', config, checkpoint, '--work-dir', out,
                        '--cfg-options', *options)
        self.run_step(f'{step}_test', cmd, [out], [f'{step}_train'])
        return read_test_metrics(out)

    def stain_shift(self, step: str, work: str, config: str,
                    checkpoint: str, options: List[str]) -> dict:
        """The final model's mIoU on the re-stained test split.

        Returns:
            dict: ``stain_shift_miou`` (condition -> fraction) and
            ``stain_shift_worst_change``; with ``--stain-norm`` also
            ``stain_norm_*``, normalised towards the checkpoint's target.
        """
        runs = dict(STAIN_RUNS) if self.args.stain_norm else {
            'stain_shift': STAIN_RUNS['stain_shift']}
        scores = {}
        for run, flags in runs.items():
            out = osp.join(work, run)
            cmd = self.tool('test.py', config, checkpoint, '--work-dir', out,
                            '--stain-shift',
                            *[arg for flag in flags
                              for arg in (flag, checkpoint)],
                            '--cfg-options', *options)
            self.run_step(f'{step}_{run}', cmd,
                          [osp.join(out, 'stain_shift.json')],
                          [f'{step}_train'])
            with open(osp.join(out, 'stain_shift.json')) as f:
                conditions = json.load(f)['metrics']
            miou = {name: fraction(metrics['mIoU'])
                    for name, metrics in conditions.items()}
            scores[f'{run}_miou'] = miou
            scores[f'{run}_worst_change'] = round(
                min(value - miou['clean']
                    for name, value in miou.items() if name != 'clean'), 4)
        return scores

    def pseudo_masks(self, step: str, work: str, config: str,
                     checkpoint: str, options: List[str]) -> dict:
        out = osp.join(work, 'pseudo_masks')
        cmd = self.tool('generate_pseudo_masks.py', config, checkpoint,
                        '--out', out, '--force',
                        *shlex.split(self.args.pseudo_mask_args),
                        '--cfg-options', *options)
        self.run_step(f'{step}_pseudo_masks', cmd, [out], [f'{step}_train'])
        metrics_file = osp.join(out, 'pseudo_mask_metrics.json')
        if not osp.isfile(metrics_file):
            return {}
        with open(metrics_file) as f:
            return json.load(f)

    def visualize(self, step: str, work: str, config: str, checkpoint: str,
                  options: List[str], stage1: Sequence[str],
                  stage1_step: str) -> None:
        out = osp.join(work, 'vis')
        cmd = self.tool('visualize.py', config, checkpoint, '--out', out,
                        '--num', str(self.args.num_visualize),
                        '--cam-config', stage1[0], '--cam-checkpoint',
                        stage1[1], '--cfg-options', *options)
        self.run_step(f'{step}_visualize', cmd, [out],
                      [f'{step}_train', f'{stage1_step}_train'])

    def stage2_options(self, variant: Variant,
                       pseudo_dir: str) -> List[str]:
        options = [*self.data_options()]
        if variant.pseudo_masks:
            options.append(
                f'train_dataloader.dataset.pseudo_mask_dir={pseudo_dir}')
        else:
            # Its config reads <data_root>/training_gt instead.
            gt_dir = osp.join(self.data_root, 'training_gt')
            if not osp.isdir(gt_dir):
                raise PipelineError(
                    f'step "{variant.stage2}" failed: it trains on '
                    f'ground-truth training masks, expected in {gt_dir}')
        return options + self.preset.stage2_options + self.args.stage2_options

    def run_scores(self, step: str, stage: str,
                   metrics: Dict[str, float]) -> dict:
        """A test run's scores under both protocols, as fractions.

        Args:
            step: The step that tested (for the error message).
            stage: Name prefix, ``'stage1_cam'`` or ``'test'``.
            metrics: What ``tools/test.py`` logged.

        Returns:
            dict: ``<stage>_miou`` / ``_mdice`` / ``_fwiou`` and
            ``<stage>_iou`` (class -> IoU), each also with the suffix
            ``_background_as_error``.

        Raises:
            PipelineError: If a metric is missing.
        """
        keys = run_score_keys(stage)
        class_keys = {
            f'{stage}_iou{suffix}': {
                cls: f'{prefix}IoU.{cls}'
                for cls in self.preset.classes
            }
            for suffix, prefix in PROTOCOLS.items()
        }
        needed = [*keys.values()] + [
            key for per_class in class_keys.values()
            for key in per_class.values()
        ]
        missing = [key for key in needed if key not in metrics]
        if missing:
            raise PipelineError(
                f'step "{step}_test" logged no {missing}: its '
                f'test_evaluator must be TissueIoUMetric with iou_metrics '
                f"['mIoU', 'mDice', 'FwIoU'] and extra_protocols="
                f"['background_as_error'] (as in configs/_base_/datasets)")
        scores = {name: fraction(metrics[key]) for name, key in keys.items()}
        for name, per_class in class_keys.items():
            scores[name] = {
                cls: fraction(metrics[key])
                for cls, key in per_class.items()
            }
        return scores

    def run_stage1(self, config: str, seed: int, done: Dict[str, dict]) -> dict:
        """Train, test and label with one stage-1 config for one seed.

        Args:
            config: The stage-1 config.
            seed: Training seed.
            done: Stage-1 runs of this seed so far (config -> result);
                updated. A config with a prototype encoder in the preset
                runs that encoder's stage 1 first.

        Returns:
            dict: ``step``, ``checkpoint``, ``pseudo_dir`` and ``scores``.
        """
        if config in done:
            return done[config]
        step = f'seed{seed}_{config_name(config)}'
        work = osp.join(self.work_dir, f'seed_{seed}', config_name(config))
        options = [*self.data_options(), *self.preset.stage1_options,
                   *self.args.stage1_options]
        after = ['data']
        encoder = self.preset.prototype_encoders.get(config)
        if encoder is not None:
            first = self.run_stage1(encoder, seed, done)
            options += [
                f'custom_hooks.0.encoder.config={encoder}',
                f'custom_hooks.0.encoder.checkpoint={first["checkpoint"]}'
            ]
            after.append(f'{first["step"]}_train')
        ckpt = self.train(step, work, config, options, seed, after)
        cam = self.test(step, work, config, ckpt, options)
        pseudo = self.pseudo_masks(step, work, config, ckpt, options)
        done[config] = dict(
            step=step,
            checkpoint=ckpt,
            pseudo_dir=osp.join(work, 'pseudo_masks'),
            scores=dict(
                self.run_scores(step, 'stage1_cam', cam),
                pseudo_mask_miou=pseudo.get('mIoU'),
                pseudo_mask_precision_miou=pseudo.get('precision_mIoU'),
                pseudo_mask_coverage=pseudo.get('coverage')))
        return done[config]

    def run_seed(self, seed: int) -> Dict[str, dict]:
        """Every variant for one seed: variant -> its scores."""
        stage1 = {}
        scores = {}
        for name, variant in self.variants.items():
            first = self.run_stage1(variant.stage1, seed, stage1)
            step = f'seed{seed}_{name}'
            work = osp.join(self.work_dir, f'seed_{seed}', name)
            options = self.stage2_options(variant, first['pseudo_dir'])
            after = ['data', f'{first["step"]}_train']
            if variant.pseudo_masks:
                after.append(f'{first["step"]}_pseudo_masks')
            # Stage 2 starts from the stage-1 weights (the backbone, and
            # whatever else has the same names and shapes).
            ckpt = self.train(step, work, variant.stage2,
                              options + [f'load_from={first["checkpoint"]}'],
                              seed, after)
            metrics = self.test(step, work, variant.stage2, ckpt, options)
            if variant.pseudo_masks:
                scores[name] = dict(first['scores'])
            else:  # no stage-1 output is used
                scores[name] = dict.fromkeys(STAGE1_SCORES)
                scores[name].update({
                    key: dict.fromkeys(self.preset.classes)
                    for key in STAGE1_CLASS_SCORES
                })
            scores[name].update(self.run_scores(step, 'test', metrics))
            scores[name].update(
                self.stain_shift(step, work, variant.stage2, ckpt, options))
            if self.args.num_visualize > 0:
                self.visualize(step, work, variant.stage2, ckpt, options,
                               (variant.stage1, first['checkpoint']),
                               first['step'])
        return scores

    def run(self) -> dict:
        self.ensure_data()
        per_seed = {seed: self.run_seed(seed) for seed in self.args.seeds}
        results = aggregate(per_seed, self.variants, self.preset.classes)
        self.write_results(results)
        return results

    def write_results(self, results: dict) -> None:
        with open(osp.join(self.work_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
        table = format_results_table(results, self.preset.classes)
        header = (
            f'# Results: preset {self.args.preset}, data {self.data_root}\n'
            f'\nAll numbers measured on this run '
            f'({time.strftime("%Y-%m-%d")}), seeds {self.args.seeds}: '
            'mean ± sample std over the seeds, IoU in %. Stage-1 CAMs and '
            'final masks on the test split (CAMs gated by predicted labels), '
            'means over the tissue classes (FwIoU: weighted by their share '
            'of the GT tissue pixels) under both protocols of the '
            'literature; pseudo-masks on the training split against its '
            'hidden masks: mIoU over all ground-truth tissue pixels '
            '(unlabelled = miss), precision mIoU over the labelled pixels, '
            'coverage = labelled fraction of the tissue.\n\n')
        with open(osp.join(self.work_dir, 'results.md'), 'w') as f:
            f.write(header + table + '\n')
        print(table, flush=True)


def fraction(percent: Optional[float]) -> Optional[float]:
    """A percentage from mmseg's metrics as a 0-1 fraction.

    IoU of a class absent from both prediction and ground truth is NaN in
    mmseg; it becomes None (JSON null), not a number.
    """
    if percent is None or math.isnan(percent):
        return None
    return round(percent / 100, 4)


def mean_std(values: Sequence[Optional[float]]) -> tuple:
    """Mean and sample standard deviation (0 for one value) of the values
    that are not None; (None, None) when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 4), round(std, 4)


def aggregate(per_seed: Dict[int, Dict[str, dict]],
              variants: Dict[str, Variant], classes: List[str]) -> dict:
    """``results.json``: every score as mean and ``*_std`` over the seeds.

    The top-level stage-1 scores (``stage1_cam_miou`` ..., without the
    per-class ones) and ``pseudo_mask_*`` are those of the primary variant
    (``full`` when run, else the first); the test scores (``test_miou``,
    ``test_iou`` ..., both protocols) map every variant to its means,
    ``*_std`` to its stds, and ``variants`` holds each variant's configs,
    scores and per-seed values.
    """
    seeds = sorted(per_seed)
    summary = {}
    for name, variant in variants.items():
        runs = [per_seed[seed][name] for seed in seeds]
        entry = dict(stage1_config=variant.stage1,
                     stage2_config=variant.stage2)
        for key in SCORES:
            entry[key], entry[f'{key}_std'] = mean_std(
                [run.get(key) for run in runs])
        for key in STAIN_CONDITION_SCORES:
            conditions = dict.fromkeys(
                name for run in runs for name in run.get(key, {}))
            stats = {
                name: mean_std([run.get(key, {}).get(name) for run in runs])
                for name in conditions
            }
            entry[key] = {name: stat[0] for name, stat in stats.items()}
            entry[f'{key}_std'] = {
                name: stat[1]
                for name, stat in stats.items()
            }
        for key in STAGE1_CLASS_SCORES + TEST_CLASS_SCORES:
            stats = {
                cls: mean_std([run[key][cls] for run in runs])
                for cls in classes
            }
            entry[key] = {cls: stat[0] for cls, stat in stats.items()}
            entry[f'{key}_std'] = {cls: stat[1] for cls, stat in stats.items()}
        entry['per_seed'] = {str(seed): per_seed[seed][name] for seed in seeds}
        summary[name] = entry
    primary = summary['full'] if 'full' in summary else next(
        iter(summary.values()))
    results = dict(seeds=seeds)
    for key in STAGE1_SCORES:
        results[key] = primary[key]
        results[f'{key}_std'] = primary[f'{key}_std']
    for key in (TEST_SCORES + TEST_CLASS_SCORES + STAIN_SCORES +
                STAIN_CONDITION_SCORES):
        for name in (key, f'{key}_std'):
            results[name] = {
                variant: entry[name]
                for variant, entry in summary.items()
            }
    results['variants'] = summary
    return results


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The metrics a ``tools/test.py`` run logged (newest JSON in its dir)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    for path in reversed(files):
        with open(path) as f:
            metrics = json.load(f)
        if 'mIoU' in metrics:
            return metrics
    raise PipelineError(f'no test metrics (mIoU) found under {work_dir}')


# Titles of the results tables, one per protocol (suffix of PROTOCOLS).
PROTOCOL_TITLES = {
    '': 'GT background ignored (WSSS-Tissue / MLPS protocol)',
    '_background_as_error': 'tissue predicted on GT background counts as '
    'error (TPRO / PBIP protocol)',
}


def pct(value: Optional[float], std: Optional[float]) -> str:
    """A fraction and its std as ``'12.34 ± 0.56'`` (%; ``'-'`` if None)."""
    if value is None:
        return '-'
    return f'{100 * value:.2f}' if not std else \
        f'{100 * value:.2f} ± {100 * std:.2f}'


def format_results_table(results: dict, classes: List[str]) -> str:
    """Markdown tables of the pipeline's numbers, one per protocol (mean ±
    std, in %); the pseudo-mask scores (training split) are in the first."""

    tables = []
    for suffix, title in PROTOCOL_TITLES.items():
        columns = [(f'stage-1 CAM {key} (test)', f'stage1_cam_{name}{suffix}')
                   for name, key in RUN_METRICS.items()]
        if not suffix:
            columns += [('pseudo-mask mIoU (train)', 'pseudo_mask_miou'),
                        ('pseudo-mask precision mIoU',
                         'pseudo_mask_precision_miou'),
                        ('coverage', 'pseudo_mask_coverage')]
        columns += [(f'final {key} (test)', f'test_{name}{suffix}')
                    for name, key in RUN_METRICS.items()]
        lines = [
            f'{title}:', '',
            '| variant | ' + ' | '.join(head for head, _ in columns) +
            ' | ' + ' | '.join(classes) + ' |',
            '|---|' + '---|' * (len(columns) + len(classes))
        ]
        for name, entry in results['variants'].items():
            cells = [pct(entry[key], entry[f'{key}_std']) for _, key in columns]
            cells += [
                pct(entry[f'test_iou{suffix}'][cls],
                    entry[f'test_iou{suffix}_std'][cls]) for cls in classes
            ]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        tables.append('\n'.join(lines))
    tables.append(format_stain_table(results))
    return '\n\n'.join(tables)


# Rows of the stain-shift table: score-name prefix -> row-name suffix.
STAIN_ROWS = {'stain_shift': '', 'stain_norm': ' + Macenko'}


def format_stain_table(results: dict) -> str:
    """Markdown table of the final models' mIoU on the re-stained test
    split: one row per variant (and per variant + Macenko normalisation,
    when run), one column per condition, then the worst change."""
    conditions = list(dict.fromkeys(
        name for entry in results['variants'].values()
        for key in STAIN_CONDITION_SCORES for name in entry.get(key, {})))
    lines = [
        'Stain shift: final mIoU (test, GT background ignored) on the test '
        'images re-stained in HED space (tools/test.py --stain-shift); '
        '+ Macenko: then normalised towards the stain target of the '
        "checkpoint's training images (--stain-norm):", '',
        '| variant | ' + ' | '.join(conditions) + ' | worst change |',
        '|---|' + '---|' * (len(conditions) + 1)
    ]
    for name, entry in results['variants'].items():
        for prefix, suffix in STAIN_ROWS.items():
            miou, std = (entry.get(f'{prefix}_miou{end}', {})
                         for end in ('', '_std'))
            if not miou:
                continue
            change = entry[f'{prefix}_worst_change']
            change_std = entry[f'{prefix}_worst_change_std']
            cells = [pct(miou.get(c), std.get(c)) for c in conditions]
            worst = '-' if change is None else \
                f'{"+" if change >= 0 else ""}{pct(change, change_std)}'

            lines.append(f'| {name}{suffix} | ' + ' | '.join(cells) +
                         f' | {worst} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = parse_args(argv)
        Pipeline(args).run()
    except PipelineError as err:
        print(f'[pipeline] {err}', file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
