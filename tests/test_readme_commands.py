"""The README's code blocks, run as written on tiny data.

Every ```bash block of README.md runs, in README order, through ``bash -c``
in one scratch dir that links the repository's ``tools/`` and ``configs/``,
so that relative paths (``data/...``, ``work_dirs/...``, the configs' data
roots) land there and later commands find what earlier ones wrote (each
checkpoint through its run's own ``last_checkpoint``). Only the interpreter
is replaced (``.venv/bin/python`` -> this one) and tiny-data / tiny-schedule
options are appended. The ```python blocks run too: configs (a block that
sets ``_base_``) are loaded and their model built, scripts run in the
scratch dir after the bash blocks before them.

A block preceded by ``<!-- readme-test: static (reason) -->`` needs what CI
does not have (GPUs, the real datasets, published weights, minutes of
training); it is checked without running: its scripts and configs exist,
its presets are presets, its flags are in the script's ``--help``, its make
targets exist.
"""
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List

import pytest
import torch
from mmseg.registry import MODELS
from test_manifest_training import make_patches

from protoprompt_mm.apis import PRESETS
from protoprompt_mm.utils import load_config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(REPO_ROOT, 'README.md')
STATIC = re.compile(r'<!-- readme-test: static \((.+?)\) -->\s*$')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
WORKERS = [
    *(f'{loader}.num_workers=0' for loader in LOADERS),
    *(f'{loader}.persistent_workers=False' for loader in LOADERS),
]
MANIFEST_CONFIG = 'stage1_protocam_r18_manifest.py'
# The manifest patches of test_manifest_training name the test split in
# test.json (the config's default is test.csv).
MANIFEST_OPTIONS = ['test_dataloader.dataset.ann_file=test.json']


def schedule(iters: int) -> List[str]:
    """``--cfg-options`` of a training run of ``iters`` iterations."""
    return [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'train_dataloader.batch_size=4', 'param_scheduler.0.end=1',
        'param_scheduler.1.begin=1', *WORKERS
    ]


# What each tool gets appended, by script name.
TINY = {
    'make_synthetic_histo.py': ['--num-train', '24', '--num-val', '2',
                                '--num-test', '2', '--size', '64'],
    'train.py': ['--cfg-options', *schedule(2)],
    'generate_pseudo_masks.py': ['--cfg-options', *WORKERS],
    'test.py': ['--cfg-options', *WORKERS],
    'make_synthetic_slide.py': ['--size', '640x512'],
    'infer_slide.py': ['--batch-size', '4'],
}


@dataclass
class Block:
    """A fenced code block of the README."""
    language: str
    text: str
    line: int  # of the opening fence, 1-based
    section: str  # the ``## `` heading it is under
    static_reason: str = ''

    def commands(self) -> List[str]:
        """Its shell commands (continuations joined, comments dropped)."""
        lines = self.text.replace('\\\n', ' ').splitlines()
        return [line.strip() for line in lines
                if line.strip() and not line.lstrip().startswith('#')]


def readme_blocks() -> List[Block]:
    """Every ```bash and ```python block of README.md, in order."""
    with open(README) as f:
        lines = f.read().splitlines()
    blocks, i, section = [], 0, ''
    while i < len(lines):
        if lines[i].startswith('## '):
            section = lines[i][3:].strip()
        fence = re.match(r'^```(\w+)\s*$', lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines))
                   if lines[j].startswith('```'))
        previous = next((lines[j] for j in range(i - 1, -1, -1)
                         if lines[j].strip()), '')
        marker = STATIC.match(previous)
        if fence.group(1) in ('bash', 'python'):
            blocks.append(Block(fence.group(1), '\n'.join(lines[i + 1:end]),
                                i + 1, section,
                                marker.group(1) if marker else ''))
        i = end + 1
    return blocks


def script_of(command: str) -> str:
    """The ``tools/`` script a README command runs ('' for none)."""
    return next((osp.basename(word) for word in shlex.split(command, comments=True)
                 if word.startswith('tools/')), '')


def scratch_dir(path) -> str:
    """A dir in which the README's relative paths work, as in the repo."""
    for name in ('tools', 'configs'):
        os.symlink(osp.join(REPO_ROOT, name), osp.join(path, name))
    return str(path)


def run(command: str, cwd: str, *extra: str) -> subprocess.CompletedProcess:
    """Run a README command with ``extra`` arguments appended."""
    assert command.startswith('.venv/bin/python '), command
    command = shlex.quote(sys.executable) + command[len('.venv/bin/python'):]
    command = ' '.join([command, *map(shlex.quote, extra)])
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    # One thread: on a shared 2-core machine several torch threads per
    # process make a tiny iteration take seconds instead of 0.1 s.
    env.setdefault('OMP_NUM_THREADS', '1')
    return subprocess.run(['bash', '-c', command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def check(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 0, (f'{command}\nfailed:\n{proc.stdout[-3000:]}'
                                  f'\n{proc.stderr[-5000:]}')
    return proc.stdout + proc.stderr


def tiny_arguments(command: str) -> List[str]:
    """What a README command gets appended."""
    extra = list(TINY.get(script_of(command), []))
    if MANIFEST_CONFIG in command and '--cfg-options' in extra:
        extra += MANIFEST_OPTIONS
    return extra


def run_config_block(block: Block, cwd: str) -> None:
    """Load a README config (its relative bases as from configs/examples/)
    and build its model."""
    folder = osp.join(cwd, 'readme_configs', 'examples')
    os.makedirs(folder, exist_ok=True)
    base = osp.join(cwd, 'readme_configs', '_base_')
    if not osp.exists(base):
        os.symlink(osp.join(REPO_ROOT, 'configs', '_base_'), base)
    path = osp.join(folder, f'readme_line{block.line}.py')
    with open(path, 'w') as f:
        f.write(block.text + '\n')
    MODELS.build(load_config(path).model)


def backbone(checkpoint: str) -> Dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=False)['state_dict']
    return {k: v for k, v in state.items()
            if k.startswith('backbone.') and v.is_floating_point()}


@pytest.fixture(scope='module')
def readme_run(tmp_path_factory):
    """Every runnable block in README order; what each command printed."""
    cwd = scratch_dir(tmp_path_factory.mktemp('readme'))
    # The patches of "Your own patches" (the example config's data root).
    make_patches(osp.join(cwd, 'data', 'my_patches'))
    outputs = {}
    for block in readme_blocks():
        if block.static_reason:
            continue
        if block.language == 'python' and '_base_' in block.text:
            run_config_block(block, cwd)
        elif block.language == 'python':
            proc = subprocess.run(
                [sys.executable, '-c', block.text], cwd=cwd,
                env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                capture_output=True, text=True, timeout=600)
            outputs[block.text] = check(proc, block.text)
        else:
            for command in block.commands():
                proc = run(command, cwd, *tiny_arguments(command))
                outputs[command] = check(proc, command)
    ckpts = {}
    for stage in ('s1', 's2'):
        with open(osp.join(cwd, 'work_dirs', stage, 'last_checkpoint')) as f:
            ckpts[stage] = f.read().strip()
    return dict(cwd=cwd, outputs=outputs, ckpts=ckpts,
                weights={s: backbone(c) for s, c in ckpts.items()})


def mmseg_way_commands() -> List[str]:
    """The commands of the README's "Running mmseg's way" bash block."""
    return next(b for b in readme_blocks() if b.language == 'bash' and
                b.section == "Running mmseg's way").commands()


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    run_blocks = [b for b in blocks if not b.static_reason]
    assert len(run_blocks) >= 6, [b.line for b in run_blocks]
    for block in blocks:
        if block.language == 'bash' and not block.static_reason:
            for command in block.commands():
                assert command.startswith('.venv/bin/python tools/'), (
                    f'README.md:{block.line}: {command!r} can only run here '
                    'as .venv/bin/python tools/...; mark the block static')


def test_mmseg_way_is_the_whole_pipeline():
    scripts = [script_of(c) for c in mmseg_way_commands()]
    assert scripts == ['make_synthetic_histo.py', 'train.py',
                       'generate_pseudo_masks.py', 'train.py', 'test.py']


def test_readme_commands_run_and_stage2_starts_from_stage1(readme_run):
    outputs, ckpts = readme_run['outputs'], readme_run['ckpts']
    commands = mmseg_way_commands()
    assert ckpts['s1'].endswith('iter_2.pth'), ckpts
    masks = osp.join(readme_run['cwd'], 'data', 'synthetic_histo',
                     'pseudo_masks')
    assert sum(n.endswith('.png') for n in os.listdir(masks)) == 24
    # Stage 2 loaded the stage-1 checkpoint ...
    assert f'Load checkpoint from {ckpts["s1"]}' in outputs[commands[3]]
    # ... and its backbone is the stage-1 one after 2 small steps (a new
    # initialisation differs by far more).
    stage1, stage2 = readme_run['weights']['s1'], readme_run['weights']['s2']
    shared = [k for k in stage1 if k in stage2 and k.endswith('.weight')]
    assert shared, 'stage 1 and stage 2 share no backbone weights'
    for key in shared:
        assert torch.allclose(stage1[key], stage2[key], atol=0.01), key
    assert re.search(r'mIoU: \d+\.\d+', outputs[commands[4]])


def command_output(outputs: Dict[str, str], *words: str) -> str:
    """What the one README command containing every word printed."""
    found = [out for command, out in outputs.items()
             if all(word in command for word in words)]
    assert len(found) == 1, (words, list(outputs))
    return found[0]


def test_python_inference_and_other_blocks_did_their_job(readme_run):
    cwd, outputs = readme_run['cwd'], readme_run['outputs']
    assert 'pseudo-mask mIoU:' in command_output(
        outputs, 'generate_pseudo_masks.py', 'synthetic')
    inference = command_output(outputs, 'inference_model')
    assert "(64, 64) ('TUM', 'STR', 'LYM', 'NEC')" in inference, inference
    # Your own patches: stage 1 trained and validated on its classes ...
    assert re.search(r'Iter\(val\) \[2/2\].* mIoU: \d+\.\d+  .*'
                     r'IoU\.tumour: .*IoU\.stroma: .*IoU\.necrosis: ',
                     command_output(outputs, 'train.py', 'manifest'))
    # ... tested with mmseg's SegTTAModel ...
    tta = command_output(outputs, 'test.py', 'manifest', '--tta')
    assert "type='SegTTAModel'" in tta and 'Iter(test) [2/2]' in tta
    assert re.search(r'IoU\.tumour', tta)
    # ... pseudo-masks of every training patch, named by manifest paths.
    pseudo = osp.join(cwd, 'data', 'my_patches', 'pseudo_masks', 'patches')
    assert len(glob.glob(osp.join(pseudo, 'p*.png'))) == 12
    # Whole slides: the four outputs.
    slide_out = sorted(os.listdir(osp.join(cwd, 'work_dirs', 'slides')))
    assert slide_out == ['synthetic_slide.geojson', 'synthetic_slide.json',
                         'synthetic_slide.tif',
                         'synthetic_slide_overlay.png']


def test_resume_continues_the_work_dir_not_load_from(readme_run):
    # The README's stage-2 command again (load_from = the stage-1 weights),
    # with --resume and 2 more iterations: mmengine alone would resume from
    # load_from and fail on the stage-1 optimizer state.
    command = mmseg_way_commands()[3]
    proc = run(command, readme_run['cwd'], '--resume', '--cfg-options',
               *schedule(4))
    printed = check(proc, command + ' --resume')
    own = readme_run['ckpts']['s2']
    assert f'--resume: resuming from {own}' in printed
    assert 'resumed epoch: 0, iter: 2' in printed
    work_dir = osp.join(readme_run['cwd'], 'work_dirs', 's2')
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_4.pth')


def test_stage2_without_stage1_checkpoint_stops_early(tmp_path):
    # Stage 2 run first: `$(cat work_dirs/s1/last_checkpoint)` gives nothing.
    command = mmseg_way_commands()[3]
    proc = run(command, scratch_dir(tmp_path), *TINY['train.py'])
    assert proc.returncode != 0
    assert 'train stage 1 first' in proc.stderr, proc.stderr[-3000:]
    assert not osp.exists(osp.join(tmp_path, 'work_dirs', 's2'))


# What a dist_*.sh command's flags are for.
SHELL_TOOLS = {'dist_train.sh': 'train.py', 'dist_test.sh': 'test.py'}


def help_script(command: str) -> str:
    """The ``tools/`` Python script whose ``--help`` lists the flags of a
    README command ('' for none)."""
    script = script_of(command)
    return SHELL_TOOLS.get(script, script)


def static_problems(block: Block, helps: Dict[str, str]) -> List[str]:
    """What is wrong with a block that is not run (empty: nothing)."""
    problems = []
    for command in block.commands():
        words = shlex.split(command, comments=True)
        where = f'README.md:{block.line}: {command[:60]}'
        if words[0] == 'make':
            proc = subprocess.run(['make', '-n', *words[1:]], cwd=REPO_ROOT,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                problems.append(f'{where}: {proc.stderr.strip()}')
            continue
        for word in words:
            path = word.split('=', 1)[-1]
            if path.startswith(('configs/', 'tools/')) and not osp.exists(
                    osp.join(REPO_ROOT, path)):
                problems.append(f'{where}: {path} does not exist')
        for flag, value in zip(words, words[1:]):
            if flag == '--preset' and value not in PRESETS:
                problems.append(f'{where}: no preset {value!r}')
        script = help_script(command)
        if script.endswith('.py'):
            if script not in helps:
                helps.update(tool_helps([script]))
            problems += [f'{where}: {script} has no {word}' for word in words
                         if word.startswith('--')
                         and word.split('=')[0] not in helps[script]]
    return problems


HELP_RUNNER = """
import contextlib, io, json, runpy, sys
helps = {}
for script in sys.argv[1:]:
    sys.argv, out = [script, '--help'], io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        runpy.run_path('tools/' + script, run_name='__main__')
    helps[script] = out.getvalue()
print(json.dumps(helps))
"""


def tool_helps(scripts: List[str]) -> Dict[str, str]:
    """``tools/<script> --help`` of each script, in one process."""
    proc = subprocess.run([sys.executable, '-c', HELP_RUNNER, *scripts],
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_static_blocks_name_what_exists():
    blocks = [b for b in readme_blocks() if b.static_reason]
    assert blocks
    scripts = {help_script(c) for block in blocks for c in block.commands()}
    helps = tool_helps(sorted(s for s in scripts if s.endswith('.py')))
    problems = [p for block in blocks for p in static_problems(block, helps)]
    assert not problems, '\n'.join(problems)


def test_static_check_catches_a_renamed_config_flag_and_preset():
    block = Block('bash', '.venv/bin/python tools/run_pipeline.py --preset '
                  'bcss-wsss-pbipp --data-root d --no-such-flag x\n'
                  '.venv/bin/python tools/train.py configs/renamed.py\n'
                  'make no-such-target', 1, 'test', 'test')
    problems = '\n'.join(static_problems(block, {}))
    for expected in ("no preset 'bcss-wsss-pbipp'", 'has no --no-such-flag',
                     'configs/renamed.py does not exist', 'no-such-target'):
        assert expected in problems, problems


def test_docs_name_no_stale_paths():
    """Paths, branches and tests that the docs once named and that do not
    exist; and every backticked repository path in the docs exists."""
    docs = [README, *glob.glob(osp.join(REPO_ROOT, 'docs', '*.md')),
            osp.join(REPO_ROOT, 'requirements.txt')]
    stale = ['exp/method-quality', 'tools/analysis/',
             'configs/protoprompt/experiments/', 'xfail', 'DEVELOPERS.md']
    missing = []
    for doc in docs:
        with open(doc) as f:
            text = f.read()
        missing += [f'{doc}: names {s}' for s in stale if s in text]
        for path in re.findall(
                r'`((?:configs|tools|protoprompt_mm|tests|docs)/[\w./-]+)`',
                text):
            if not glob.glob(osp.join(REPO_ROOT, path.rstrip('/'))):
                missing.append(f'{doc}: {path} does not exist')
    assert not missing, '\n'.join(missing)
