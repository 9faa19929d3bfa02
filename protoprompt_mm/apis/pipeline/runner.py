"""The two-stage WSSS pipeline for one data root and work dir.

A variant is a stage-1 + stage-2 pair. Steps (each a subprocess of a script
in ``tools/``, with mmengine's logs): synthetic data (presets with
``synthetic``, when the data root is missing) -> per seed, per stage-1
config the variants use: stage-1 CAM training -> stage-1 test (CAM mIoU,
gated by predicted labels) -> pseudo-masks of the training split (and
their scores where ground truth exists) -> per variant: stage-2 training
on its stage 1's pseudo-masks, starting from the stage-1 weights -> its
test on the clean and the re-stained test split (one ``tools/test.py
--stain-shift`` run: its clean condition gives the test scores) -> with
``stain_norm`` the same Macenko-normalised -> overlay pictures ->
``W/results.json`` and ``W/results.md``
(:mod:`~protoprompt_mm.apis.pipeline.results_report`). A stage-1 run
shared by several variants is trained once per seed. Outputs of seed s are
in ``W/seed_<s>/``: ``<stage-1 config name>/`` and ``<variant>/``, each
with its training run, ``test/``, and ``pseudo_masks/`` (stage 1) or
``stain_norm/`` and ``vis/`` (stage 2). Finished steps are reused
(:class:`~protoprompt_mm.apis.pipeline.step_runner.StepRunner`), so an
interrupted run finishes what is missing when started again.
"""
import json
import os.path as osp
import shlex
from typing import Any, Dict, List, Optional, Sequence

from ..stain_shift import CLEAN
from .aggregation import aggregate
from .presets import PRESETS, Variant, config_name, synthetic_settings
from .results_report import write_results
from .scores import (STAGE1_CLASS_SCORES, STAGE1_SCORES,
                     read_stain_shift_metrics, read_test_metrics, run_scores,
                     stain_scores)
from .step_runner import PipelineError, StepRunner, tool_command


class Pipeline:
    """Runs the steps for one data root and work dir.

    Args:
        data_root: Dataset in the BCSS-WSSS / LUAD-HistoSeg layout
            (generated when missing and the preset is synthetic).
        work_dir: Where every step writes; markers in ``<work_dir>/.steps``.
        preset: A key of :data:`~protoprompt_mm.apis.pipeline.PRESETS`.
        variants: Variant names of the preset, or stage-2 config paths
            (which then start from the stage 1 of the preset's ``full``
            variant); None: the preset's default variants.
        seeds: Training seeds, distinct; each runs the whole chain.
        data_seed: Seed of the generated synthetic data.
        stage1_options: Extra ``--cfg-options`` (``k=v``) for stage 1.
        stage2_options: Extra ``--cfg-options`` for every stage-2 variant.
        pseudo_mask_args: Extra arguments of
            ``tools/generate_pseudo_masks.py``, one shell-quoted string.
        synthetic: ``key=value`` settings of the generated data
            (:func:`~protoprompt_mm.apis.pipeline.presets.synthetic_settings`).
        stain_norm: Also test the final models on the re-stained test split
            Macenko-normalised towards the stain their checkpoints carry.
        num_visualize: Test patches drawn as overlay panels per variant
            (0: no overlay step).

    Raises:
        ValueError: If ``seeds`` repeat a seed or ``preset`` is unknown.
        PipelineError: If a variant is neither of the preset nor a file.
    """

    def __init__(self,
                 data_root: str,
                 work_dir: str,
                 preset: str = 'demo',
                 variants: Optional[Sequence[str]] = None,
                 seeds: Sequence[int] = (0, ),
                 data_seed: int = 0,
                 stage1_options: Sequence[str] = (),
                 stage2_options: Sequence[str] = (),
                 pseudo_mask_args: str = '',
                 synthetic: Sequence[str] = (),
                 stain_norm: bool = False,
                 num_visualize: int = 4) -> None:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f'seeds must be distinct, got {list(seeds)}')
        if preset not in PRESETS:
            raise ValueError(f'unknown preset {preset!r}: expected one of '
                             f'{sorted(PRESETS)}')
        self.preset_name = preset
        self.preset = PRESETS[preset]
        self.data_root = osp.abspath(data_root)
        self.work_dir = osp.abspath(work_dir)
        self.seeds = list(seeds)
        self.data_seed = data_seed
        self.stage1_options = list(stage1_options)
        self.stage2_options = list(stage2_options)
        self.pseudo_mask_args = pseudo_mask_args
        self.synthetic = list(synthetic)
        self.stain_norm = stain_norm
        self.num_visualize = num_visualize
        self.steps = StepRunner(osp.join(self.work_dir, '.steps'))
        self.variants = {
            name: self.variant(name)
            for name in variants or self.preset.default_variants
        }

    def variant(self, name: str) -> Variant:
        """The preset's variant ``name``, or a stage-2 config file with the
        stage 1 of the preset's ``full`` variant."""
        if name in self.preset.variants:
            return self.preset.variants[name]
        if osp.isfile(name) and 'full' in self.preset.variants:
            return Variant(self.preset.variants['full'].stage1, name)
        raise PipelineError(
            f'unknown variant {name!r}: expected one of '
            f'{sorted(self.preset.variants)} or a stage-2 config file')

    def data_options(self) -> List[str]:
        """``--cfg-options`` pointing every dataloader at the data root."""
        loaders = ['train_dataloader', 'val_dataloader', 'test_dataloader']
        return [f'{loader}.dataset.data_root={self.data_root}'
                for loader in loaders]

    # -------------------------------------------------------------- steps
    def ensure_data(self) -> None:
        """Generate the synthetic data root when it is missing (step
        ``data``).

        Raises:
            PipelineError: If it is missing and the preset needs real data.
        """
        if osp.isdir(self.data_root):
            return
        if not self.preset.synthetic:
            raise PipelineError(
                f'step "data" failed: --data-root {self.data_root} does not '
                f'exist (preset {self.preset_name} needs the real dataset)')
        settings = synthetic_settings(self.synthetic)
        cmd = tool_command('make_synthetic_histo.py', '--out', self.data_root,
                           '--seed', str(self.data_seed))
        for key, value in settings.items():
            cmd += [f'--{key.replace("_", "-")}', str(value)]
        self.steps.run_step('data', cmd,
                            [osp.join(self.data_root, 'training')])

    def train(self, step: str, work: str, config: str, options: List[str],
              seed: int, after: Sequence[str] = ('data', )) -> str:
        """Train ``config`` in ``work`` (step ``<step>_train``).

        Returns:
            str: Its last checkpoint.
        """
        cmd = tool_command('train.py', config, '--work-dir', work,
                           '--cfg-options', f'randomness.seed={seed}',
                           *options)
        self.steps.run_step(f'{step}_train', cmd,
                            [osp.join(work, 'last_checkpoint')], after)
        with open(osp.join(work, 'last_checkpoint')) as f:
            return f.read().strip()

    def test(self, step: str, work: str, config: str, checkpoint: str,
             options: List[str]) -> Dict[str, float]:
        """Test a stage-1 checkpoint in ``<work>/test`` (step
        ``<step>_test``).

        Returns:
            dict: The metrics ``tools/test.py`` logged.
        """
        out = osp.join(work, 'test')
        cmd = tool_command('test.py', config, checkpoint, '--work-dir', out,
                           '--cfg-options', *options)
        self.steps.run_step(f'{step}_test', cmd, [out], [f'{step}_train'])
        return read_test_metrics(out)

    def test_stain_shifts(self, step: str, run: str, work: str, config: str,
                          checkpoint: str, options: List[str],
                          flags: Sequence[str] = ()
                          ) -> Dict[str, Dict[str, float]]:
        """Test a final checkpoint on the clean and the re-stained test
        split in ``<work>/<run>`` (step ``<step>_<run>``).

        Args:
            step: The variant's step name (``seed<s>_<variant>``).
            run: ``'test'``, or ``'stain_norm'`` with its flags.
            work: The variant's work dir.
            config / checkpoint / options: The stage-2 run.
            flags: More ``tools/test.py`` flags (``--stain-norm CKPT``).

        Returns:
            dict: Condition -> its metrics, ``clean`` first.
        """
        out = osp.join(work, run)
        cmd = tool_command('test.py', config, checkpoint, '--work-dir', out,
                           '--stain-shift', *flags, '--cfg-options',
                           *options)
        self.steps.run_step(f'{step}_{run}', cmd,
                            [osp.join(out, 'stain_shift.json')],
                            [f'{step}_train'])
        return read_stain_shift_metrics(out)

    def pseudo_masks(self, step: str, work: str, config: str,
                     checkpoint: str, options: List[str]) -> dict:
        """Label the training split in ``<work>/pseudo_masks`` (step
        ``<step>_pseudo_masks``).

        Returns:
            dict: Their scores (``pseudo_mask_metrics.json``); empty without
            ground truth.
        """
        out = osp.join(work, 'pseudo_masks')
        cmd = tool_command('generate_pseudo_masks.py', config, checkpoint,
                           '--out', out, '--force',
                           *shlex.split(self.pseudo_mask_args),
                           '--cfg-options', *options)
        self.steps.run_step(f'{step}_pseudo_masks', cmd, [out],
                            [f'{step}_train'])
        metrics_file = osp.join(out, 'pseudo_mask_metrics.json')
        if not osp.isfile(metrics_file):
            return {}
        with open(metrics_file) as f:
            return json.load(f)

    def visualize(self, step: str, work: str, config: str, checkpoint: str,
                  options: List[str], stage1: Sequence[str],
                  stage1_step: str) -> None:
        """Overlay panels of a final model and its stage 1's CAMs in
        ``<work>/vis`` (step ``<step>_visualize``)."""
        out = osp.join(work, 'vis')
        cmd = tool_command('visualize.py', config, checkpoint, '--out', out,
                           '--num', str(self.num_visualize),
                           '--cam-config', stage1[0], '--cam-checkpoint',
                           stage1[1], '--cfg-options', *options)
        self.steps.run_step(f'{step}_visualize', cmd, [out],
                            [f'{step}_train', f'{stage1_step}_train'])

    def variant_stage2_options(self, variant: Variant,
                               pseudo_dir: str) -> List[str]:
        """``--cfg-options`` of a variant's stage 2.

        Raises:
            PipelineError: If it trains on ground-truth training masks and
                the data root has none.
        """
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
        return options + self.preset.stage2_options + self.stage2_options

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
                   *self.stage1_options]
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
                run_scores(step, 'stage1_cam', cam, self.preset.classes),
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
            options = self.variant_stage2_options(variant, first['pseudo_dir'])
            after = ['data', f'{first["step"]}_train']
            if variant.pseudo_masks:
                after.append(f'{first["step"]}_pseudo_masks')
            # Stage 2 starts from the stage-1 weights (the backbone, and
            # whatever else has the same names and shapes).
            ckpt = self.train(step, work, variant.stage2,
                              options + [f'load_from={first["checkpoint"]}'],
                              seed, after)
            # The clean condition of the stain-shift run is the test.
            shifted = self.test_stain_shifts(step, 'test', work,
                                            variant.stage2, ckpt, options)
            if variant.pseudo_masks:
                scores[name] = dict(first['scores'])
            else:  # no stage-1 output is used
                scores[name] = dict.fromkeys(STAGE1_SCORES)
                scores[name].update({
                    key: dict.fromkeys(self.preset.classes)
                    for key in STAGE1_CLASS_SCORES
                })
            scores[name].update(
                run_scores(step, 'test', shifted[CLEAN], self.preset.classes))
            scores[name].update(stain_scores('stain_shift', shifted))
            if self.stain_norm:
                normalised = self.test_stain_shifts(
                    step, 'stain_norm', work, variant.stage2, ckpt, options,
                    ['--stain-norm', ckpt])
                scores[name].update(stain_scores('stain_norm', normalised))
            if self.num_visualize > 0:
                self.visualize(step, work, variant.stage2, ckpt, options,
                               (variant.stage1, first['checkpoint']),
                               first['step'])
        return scores

    def run(self) -> dict:
        """Every step, then ``results.json`` / ``results.md``.

        Returns:
            dict: The content of ``results.json``.

        Raises:
            PipelineError: If a step fails (named in the message).
        """
        self.ensure_data()
        per_seed = {seed: self.run_seed(seed) for seed in self.seeds}
        results = aggregate(per_seed, self.variants, self.preset.classes)
        write_results(self.work_dir, results, self.preset.classes,
                      self.preset_name, self.data_root, self.seeds)
        return results


def run_pipeline(data_root: str, work_dir: str, **settings: Any) -> dict:
    """Run the pipeline (:class:`Pipeline`, same arguments).

    Returns:
        dict: The content of ``<work_dir>/results.json``.

    Raises:
        PipelineError: If a step fails (named in the message).
    """
    return Pipeline(data_root, work_dir, **settings).run()
