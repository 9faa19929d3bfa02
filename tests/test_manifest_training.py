"""The manifest example config through tools/train.py on tiny data (the
session's ``trained`` fixture, conftest.py), its TTA views; a corrupt image
stops tools/train.py before iteration 1. The README's manifest commands
(train, ``test.py --tta``, pseudo-masks) run in test_readme_commands.py."""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
from mmengine.config import Config
from mmseg.registry import DATASETS

from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import save_rgb_png

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO_ROOT, 'configs', 'examples',
                  'stage1_protocam_r18_manifest.py')
CLASSES = ('tumour', 'stroma', 'necrosis')  # as in the example config
SIZE = 64
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def make_patches(root) -> None:
    """12 training patches (each class alone and in pairs), 2 val and 2 test
    patches with masks, and their manifests (CSV names, CSV flags, JSON)."""
    rng = np.random.default_rng(0)
    flags = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1],
             [1, 0, 1]] * 2
    lines = ['image,' + ','.join(CLASSES)]
    for i, row in enumerate(flags):
        path = osp.join(root, 'patches', f'p{i:02d}.png')
        os.makedirs(osp.dirname(path), exist_ok=True)
        save_rgb_png(path, rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
        lines.append(f'patches/p{i:02d}.png,' + ','.join(map(str, row)))
    with open(osp.join(root, 'train.csv'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    entries = {'val': [], 'test': []}
    for split in entries:
        for i in range(2):
            name = f'{split}{i}'
            save_rgb_png(
                osp.join(root, 'patches', f'{name}.png'),
                rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
            mask = rng.integers(0, 4, (SIZE, SIZE), np.uint8)  # 3 = bg
            os.makedirs(osp.join(root, 'masks'), exist_ok=True)
            save_palette_mask(osp.join(root, 'masks', f'{name}.png'), mask)
            entries[split].append(f'patches/{name}.png')
    with open(osp.join(root, 'val.csv'), 'w') as f:
        f.write('image,labels\n' + ''.join(f'{p},\n' for p in entries['val']))
    with open(osp.join(root, 'test.json'), 'w') as f:
        json.dump([dict(image=p) for p in entries['test']], f)


def options(data_root: str, iters: int = 2) -> list:
    """``--cfg-options`` of a tiny run on ``data_root``."""
    return [
        '--cfg-options', *(f'{loader}.dataset.data_root={data_root}'
                           for loader in LOADERS),
        'test_dataloader.dataset.ann_file=test.json',
        *(f'{loader}.num_workers=0' for loader in LOADERS),
        *(f'{loader}.persistent_workers=False' for loader in LOADERS),
        'train_dataloader.batch_size=4', f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'param_scheduler.0.end=1', 'param_scheduler.1.begin=1'
    ]


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    return subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def test_manifest_data_trains_stage_1(trained):
    assert trained['checkpoint'].endswith('iter_2.pth')
    assert 'Saving checkpoint at 2 iterations' in trained['log']
    assert re.search(r'Iter\(val\) \[2/2\].* mIoU: \d+\.\d+  .*'
                     r'IoU\.tumour: .*IoU\.stroma: .*IoU\.necrosis: ',
                     trained['log']), trained['log'][-3000:]


def test_tta_pipeline_gives_three_flipped_views(trained):
    cfg = Config.fromfile(CONFIG)
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.update(
        data_root=trained['data_root'], ann_file='test.json',
        pipeline=cfg.tta_pipeline)
    views = DATASETS.build(dataset_cfg)[0]
    metas = [sample.metainfo for sample in views['data_samples']]
    assert [(m['flip'], m['flip_direction']) for m in metas] == [
        (False, None), (True, 'horizontal'), (True, 'vertical')]
    image = views['inputs'][0]
    assert (views['inputs'][1] == image.flip(2)).all()
    assert (views['inputs'][2] == image.flip(1)).all()
    # Every view has the same (unflipped) ground truth.
    for sample in views['data_samples'][1:]:
        assert (sample.gt_sem_seg.data ==
                views['data_samples'][0].gt_sem_seg.data).all()


def test_corrupt_image_stops_training_before_iteration_1(trained, tmp_path):
    data_root = str(tmp_path / 'data')
    shutil.copytree(trained['data_root'], data_root)
    bad = osp.join(data_root, 'patches', 'p05.png')
    with open(bad, 'rb') as f:
        data = f.read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 2])
    work_dir = str(tmp_path / 'work')
    proc = run_tool('train.py', CONFIG, '--work-dir', work_dir,
                    *options(data_root))
    assert proc.returncode != 0
    assert f'{bad}: not a readable image' in proc.stderr, output(proc)[-6000:]
    assert '1 of 12 samples have bad files' in proc.stderr
    assert 'Iter(train)' not in output(proc)
    assert not glob.glob(osp.join(work_dir, '*.pth'))
