"""The README's "Running mmseg's way" commands, run as written on tiny data.

The commands are read from README.md. Each runs through ``bash -c`` in a
scratch dir that links the repository's ``tools/`` and ``configs/``, so
their relative ``data/synthetic_histo`` and ``work_dirs/`` paths (and the
configs' default data root) land there; only the interpreter is replaced
(``.venv/bin/python`` -> this one) and tiny-data / tiny-schedule options
are appended.
"""
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from typing import Dict, List

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTION = "## Running mmseg's way"
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
WORKERS = [
    *(f'{loader}.num_workers=0' for loader in LOADERS),
    *(f'{loader}.persistent_workers=False' for loader in LOADERS),
]


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
}


def readme_commands() -> List[str]:
    """The shell commands of the README's "Running mmseg's way" block."""
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        text = f.read()
    assert SECTION in text, f'README.md has no section {SECTION!r}'
    section = text.split(SECTION, 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', section, re.S)
    assert block, f'no ```bash block in the README section {SECTION!r}'
    lines = block.group(1).replace('\\\n', ' ').splitlines()
    return [line.strip() for line in lines
            if line.strip() and not line.lstrip().startswith('#')]


def script_of(command: str) -> str:
    """The ``tools/`` script a README command runs."""
    return next(osp.basename(word) for word in shlex.split(command)
                if word.startswith('tools/'))


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


def backbone(checkpoint: str) -> Dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location='cpu',
                       weights_only=False)['state_dict']
    return {k: v for k, v in state.items()
            if k.startswith('backbone.') and v.is_floating_point()}


@pytest.fixture(scope='module')
def readme_run(tmp_path_factory):
    """The README's commands run in order; what they printed and wrote."""
    cwd = scratch_dir(tmp_path_factory.mktemp('readme'))
    commands = readme_commands()
    outputs = []
    for command in commands:
        proc = run(command, cwd, *TINY[script_of(command)])
        outputs.append(check(proc, command))
    ckpts = {}
    for stage in ('s1', 's2'):
        with open(osp.join(cwd, 'work_dirs', stage, 'last_checkpoint')) as f:
            ckpts[stage] = f.read().strip()
    return dict(cwd=cwd, commands=commands, outputs=outputs, ckpts=ckpts,
                weights={s: backbone(c) for s, c in ckpts.items()})


def test_readme_block_is_the_whole_pipeline():
    scripts = [script_of(c) for c in readme_commands()]
    assert scripts == ['make_synthetic_histo.py', 'train.py',
                       'generate_pseudo_masks.py', 'train.py', 'test.py']


def test_readme_commands_run_and_stage2_starts_from_stage1(readme_run):
    outputs, ckpts = readme_run['outputs'], readme_run['ckpts']
    assert ckpts['s1'].endswith('iter_2.pth'), ckpts
    masks = osp.join(readme_run['cwd'], 'data', 'synthetic_histo',
                     'pseudo_masks')
    assert sum(n.endswith('.png') for n in os.listdir(masks)) == 24
    # Stage 2 loaded the stage-1 checkpoint ...
    assert f'Load checkpoint from {ckpts["s1"]}' in outputs[3]
    # ... and its backbone is the stage-1 one after 2 small steps (a new
    # initialisation differs by far more).
    stage1, stage2 = readme_run['weights']['s1'], readme_run['weights']['s2']
    shared = [k for k in stage1 if k in stage2 and k.endswith('.weight')]
    assert shared, 'stage 1 and stage 2 share no backbone weights'
    for key in shared:
        assert torch.allclose(stage1[key], stage2[key], atol=0.01), key
    assert re.search(r'mIoU: \d+\.\d+', outputs[4]), outputs[4][-3000:]


def test_resume_continues_the_work_dir_not_load_from(readme_run):
    # The README's stage-2 command again (load_from = the stage-1 weights),
    # with --resume and 2 more iterations: mmengine alone would resume from
    # load_from and fail on the stage-1 optimizer state.
    command = readme_run['commands'][3]
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
    command = readme_commands()[3]
    proc = run(command, scratch_dir(tmp_path), *TINY['train.py'])
    assert proc.returncode != 0
    assert 'train stage 1 first' in proc.stderr, proc.stderr[-3000:]
    assert not osp.exists(osp.join(tmp_path, 'work_dirs', 's2'))
