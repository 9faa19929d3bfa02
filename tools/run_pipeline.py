"""The whole WSSS pipeline in one command, through the project's own tools.

    python tools/run_pipeline.py --data-root DIR --work-dir W \
        [--preset demo|bcss-wsss|luad-histoseg] [--variants full ...]

Steps (each a subprocess of a script in ``tools/``, with mmengine's logs):
synthetic data (``demo`` preset, when DIR is missing) -> stage-1 CAM
training -> stage-1 test (CAM mIoU) -> pseudo-masks of the training split
(and their mIoU where ground truth exists) -> per variant: stage-2 training
on the pseudo-masks, starting from the stage-1 weights, and test -> overlay
pictures -> ``W/results.json`` and ``W/results.md``. A step that finished
before with the same command, after the same runs of the steps it depends
on, is reused (its marker ``W/.steps/<name>.json`` records both); a step
that re-runs makes the steps that use its output re-run too. A failed step
stops the run with the step named.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import shlex
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
class Preset:
    """What the pipeline runs for one dataset.

    Attributes:
        stage1: Stage-1 (CAM) config.
        variants: Variant name -> stage-2 config.
        default_variants: Variants run when ``--variants`` is not given.
        classes: Class names, in label order.
        synthetic: Generate synthetic data when the data root is missing.
        stage1_options / stage2_options: ``--cfg-options`` of the preset.
    """
    stage1: str
    variants: Dict[str, str]
    default_variants: List[str]
    classes: List[str]
    synthetic: bool = False
    stage1_options: List[str] = field(default_factory=list)
    stage2_options: List[str] = field(default_factory=list)


def _full_config(dataset: str) -> str:
    return osp.join(CONFIG_DIR, f'protoprompt_r18_{dataset}.py')


def _ablations(dataset: str) -> Dict[str, str]:
    return {
        'full': _full_config(dataset),
        'no_prototypes': osp.join(ABLATION_DIR,
                                  f'no-prototypes_r18_{dataset}.py'),
        'prototypes_no_contrastive': osp.join(
            ABLATION_DIR, f'prototypes-no-contrastive_r18_{dataset}.py'),
        'fully_supervised': osp.join(ABLATION_DIR,
                                     f'fully-supervised_r18_{dataset}.py'),
    }


def _real_data_preset(dataset: str, classes: List[str]) -> Preset:
    return Preset(
        stage1=osp.join(CONFIG_DIR, f'stage1_protocam_r18_{dataset}.py'),
        variants={'full': _full_config(dataset)},
        default_variants=['full'],
        classes=classes)


BCSS_CLASSES = ['TUM', 'STR', 'LYM', 'NEC']
PRESETS = {
    'demo': Preset(
        stage1=osp.join(CONFIG_DIR, 'stage1_protocam_r18_synthetic.py'),
        variants=_ablations('synthetic'),
        default_variants=['full'],
        classes=BCSS_CLASSES,
        synthetic=True),
    'bcss-wsss': _real_data_preset('bcss-wsss', BCSS_CLASSES),
    'luad-histoseg': _real_data_preset('luad-histoseg',
                                       ['TE', 'NEC', 'LYM', 'TAS']),
}
SYNTHETIC_DEFAULTS = dict(num_train=400, num_val=60, num_test=60, size=224)


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
        help='stage-2 variants (names of the preset, or config paths)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--stage1-options', nargs='*', default=[],
                        help='extra --cfg-options for stage 1 (k=v ...)')
    parser.add_argument('--stage2-options', nargs='*', default=[],
                        help='extra --cfg-options for every stage-2 variant')
    parser.add_argument(
        '--pseudo-mask-args', default='',
        help='extra arguments of generate_pseudo_masks.py, one string, e.g. '
        '"--scales 1.0 --no-flip --bg-thresh 0.05 --fg-thresh 0.05"')
    parser.add_argument('--synthetic', nargs='*', default=[],
                        help='generator settings when data is generated, '
                        'e.g. num_train=200 size=160')
    parser.add_argument('--num-visualize', type=int, default=4,
                        help='test patches drawn as overlay panels')
    return parser.parse_args(argv)


class Pipeline:
    """Runs the steps for one data root and work dir."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.preset = PRESETS[args.preset]
        self.data_root = osp.abspath(args.data_root)
        self.work_dir = osp.abspath(args.work_dir)
        self.marker_dir = osp.join(self.work_dir, '.steps')
        os.makedirs(self.marker_dir, exist_ok=True)

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

    def data_options(self, with_val: bool = True) -> List[str]:
        loaders = ['train_dataloader', 'val_dataloader', 'test_dataloader']
        return [f'{loader}.dataset.data_root={self.data_root}'
                for loader in loaders if with_val or loader.startswith('tr')]

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
            settings[key] = int(value)
        cmd = self.tool('make_synthetic_histo.py', '--out', self.data_root,
                        '--seed', str(self.args.seed))
        for key, value in settings.items():
            cmd += [f'--{key.replace("_", "-")}', str(value)]
        self.run_step('data', cmd, [osp.join(self.data_root, 'training')])

    def train(self,
              name: str,
              config: str,
              options: List[str],
              after: Sequence[str] = ('data', )) -> str:
        work = osp.join(self.work_dir, name)
        cmd = self.tool('train.py', config, '--work-dir', work,
                        '--cfg-options', f'randomness.seed={self.args.seed}',
                        *options)
        self.run_step(f'{name}_train', cmd,
                      [osp.join(work, 'last_checkpoint')], after)
        with open(osp.join(work, 'last_checkpoint')) as f:
            return f.read().strip()

    def test(self, name: str, config: str, checkpoint: str,
             options: List[str]) -> Dict[str, float]:
        work = osp.join(self.work_dir, name, 'test')
        cmd = self.tool('test.py', config, checkpoint, '--work-dir', work,
                        '--cfg-options', *options)
        self.run_step(f'{name}_test', cmd, [work], [f'{name}_train'])
        return read_test_metrics(work)

    def pseudo_masks(self, config: str, checkpoint: str,
                     options: List[str]) -> Optional[float]:
        out = osp.join(self.work_dir, 'pseudo_masks')
        cmd = self.tool('generate_pseudo_masks.py', config, checkpoint,
                        '--out', out, '--force',
                        *shlex.split(self.args.pseudo_mask_args),
                        '--cfg-options', *options)
        self.run_step('pseudo_masks', cmd, [out], ['stage1_train'])
        metrics_file = osp.join(out, 'pseudo_mask_metrics.json')
        if not osp.isfile(metrics_file):
            return None
        with open(metrics_file) as f:
            return round(float(json.load(f)['mIoU']), 4)

    def visualize(self, name: str, config: str, checkpoint: str,
                  options: List[str], stage1: Optional[str] = None) -> None:
        out = osp.join(self.work_dir, name, 'vis')
        cmd = self.tool('visualize.py', config, checkpoint, '--out', out,
                        '--num', str(self.args.num_visualize))
        after = [f'{name}_train']
        if stage1 is not None:
            cmd += ['--cam-config', stage1[0], '--cam-checkpoint', stage1[1]]
            after.append('stage1_train')
        cmd += ['--cfg-options', *options]
        self.run_step(f'{name}_visualize', cmd, [out], after)

    def variant_config(self, variant: str) -> str:
        if variant in self.preset.variants:
            return self.preset.variants[variant]
        if osp.isfile(variant):
            return variant
        raise PipelineError(
            f'unknown variant {variant!r}: expected one of '
            f'{sorted(self.preset.variants)} or a config file')

    def stage2_options(self, variant: str) -> List[str]:
        options = [*self.data_options()]
        if variant == 'fully_supervised':
            # Its config reads <data_root>/training_gt instead.
            gt_dir = osp.join(self.data_root, 'training_gt')
            if not osp.isdir(gt_dir):
                raise PipelineError(
                    'step "fully_supervised" failed: it trains on '
                    f'ground-truth training masks, expected in {gt_dir}')
        else:
            masks = osp.join(self.work_dir, 'pseudo_masks')
            options.append(f'train_dataloader.dataset.pseudo_mask_dir={masks}')
        return options + self.preset.stage2_options + self.args.stage2_options

    def run(self) -> dict:
        self.ensure_data()
        stage1_opts = [*self.data_options(), *self.preset.stage1_options,
                       *self.args.stage1_options]
        ckpt1 = self.train('stage1', self.preset.stage1, stage1_opts)
        cam = self.test('stage1', self.preset.stage1, ckpt1, stage1_opts)
        pseudo_miou = self.pseudo_masks(self.preset.stage1, ckpt1,
                                        stage1_opts)
        results = dict(
            stage1_cam_miou=fraction(cam['mIoU']),
            pseudo_mask_miou=pseudo_miou,
            test_miou={},
            test_iou={})
        variants = self.args.variants or self.preset.default_variants
        for variant in variants:
            config = self.variant_config(variant)
            name = osp.splitext(osp.basename(variant))[0]
            options = self.stage2_options(variant)
            # Stage 2 starts from the stage-1 weights (backbone, and the
            # PrototypeBank with its learned prototypes where both have one).
            ckpt = self.train(
                name,
                config,
                options + [f'load_from={ckpt1}'],
                after=('data', 'stage1_train', 'pseudo_masks'))
            metrics = self.test(name, config, ckpt, options)
            results['test_miou'][name] = fraction(metrics['mIoU'])
            results['test_iou'][name] = {
                cls: fraction(metrics[f'IoU.{cls}'])
                for cls in self.preset.classes
            }
            if self.args.num_visualize > 0:
                self.visualize(name, config, ckpt, options,
                               stage1=(self.preset.stage1, ckpt1))
        self.write_results(results, cam)
        return results

    def write_results(self, results: dict, cam: Dict[str, float]) -> None:
        with open(osp.join(self.work_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=2)
        table = format_results_table(results, self.preset.classes, cam)
        header = (f'# Results: preset {self.args.preset}, data '
                  f'{self.data_root}\n\nAll numbers measured on this run '
                  f'({time.strftime("%Y-%m-%d")}); IoU in %.\n\n')
        with open(osp.join(self.work_dir, 'results.md'), 'w') as f:
            f.write(header + table + '\n')
        print(table, flush=True)


def fraction(percent: float) -> Optional[float]:
    """A percentage from mmseg's metrics as a 0-1 fraction.

    IoU of a class absent from both prediction and ground truth is NaN in
    mmseg; it becomes None (JSON null), not a number.
    """
    if percent is None or math.isnan(percent):
        return None
    return round(percent / 100, 4)


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The metrics a ``tools/test.py`` run logged (newest JSON in its dir)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    for path in reversed(files):
        with open(path) as f:
            metrics = json.load(f)
        if 'mIoU' in metrics:
            return metrics
    raise PipelineError(f'no test metrics (mIoU) found under {work_dir}')


def format_results_table(results: dict, classes: List[str],
                         cam: Dict[str, float]) -> str:
    """Markdown table of the pipeline's numbers (IoU in %)."""

    def pct(value: Optional[float]) -> str:
        return '-' if value is None else f'{100 * value:.2f}'

    lines = [
        '| what | split | mIoU | ' + ' | '.join(classes) + ' |',
        '|---|---|---|' + '---|' * len(classes),
        '| stage-1 CAM | test | ' + pct(results['stage1_cam_miou']) + ' | ' +
        ' | '.join(pct(fraction(cam.get(f'IoU.{c}'))) for c in classes) +
        ' |',
        '| pseudo-masks | train | ' + pct(results['pseudo_mask_miou']) +
        ' |' + ' |' * len(classes),
    ]
    for name, miou in results['test_miou'].items():
        per_class = results['test_iou'][name]
        lines.append(f'| stage 2: {name} | test | {pct(miou)} | ' +
                     ' | '.join(pct(per_class[c]) for c in classes) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        Pipeline(args).run()
    except PipelineError as err:
        print(f'[pipeline] {err}', file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
