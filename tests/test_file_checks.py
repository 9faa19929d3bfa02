"""Bad images and masks are caught when the dataset is built, all at once."""
import io
import logging
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.utils import ProgressBar

from protoprompt_mm.datasets import BCSSWSSSDataset, HistoManifestDataset
from protoprompt_mm.datasets.file_checks import check_data_list
from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import save_rgb_png

CLASSES = ('tumour', 'stroma', 'necrosis')


def write_image(path, size=(8, 8)):
    os.makedirs(osp.dirname(path), exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    save_rgb_png(str(path), rgb)
    return str(path)


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


def write_mask(path, mask):
    os.makedirs(osp.dirname(path), exist_ok=True)
    save_palette_mask(str(path), np.asarray(mask, np.uint8))
    return str(path)


def test_every_bad_training_image_is_named_in_one_error(tmp_path):
    train = tmp_path / 'training'
    write_image(train / 'good[1000].png')
    cut = truncate(write_image(train / 'cut[0100].png'))
    text = str(train / 'text[0010].png')
    with open(text, 'w') as f:
        f.write('not a png')
    with pytest.raises(ValueError, match='2 of 3 samples have bad files') \
            as err:
        BCSSWSSSDataset(data_root=str(tmp_path), split='train')
    message = str(err.value)
    assert f'{cut}: not a readable image' in message
    assert f'{text}: not a readable image' in message
    assert 'good[1000].png' not in message
    assert 'skip_invalid=True' in message


def test_skip_invalid_logs_and_drops_the_bad_files(tmp_path, monkeypatch):
    import protoprompt_mm.datasets.file_checks as module
    logged = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, logger, level: logged.append((msg, level)))
    train = tmp_path / 'training'
    good = write_image(train / 'good[1000].png')
    cut = truncate(write_image(train / 'cut[0100].png'))
    dataset = BCSSWSSSDataset(
        data_root=str(tmp_path), split='train', skip_invalid=True)
    assert [dataset.get_data_info(i)['img_path']
            for i in range(len(dataset))] == [good]
    (message, level), = logged
    assert level == logging.WARNING
    assert message.startswith('BCSSWSSSDataset: skipping 1 of 2 samples')
    assert f'{cut}: not a readable image' in message
    (tmp_path / 'training' / 'good[1000].png').unlink()
    with pytest.raises(ValueError, match='all 1 samples have bad files'):
        BCSSWSSSDataset(
            data_root=str(tmp_path), split='train', skip_invalid=True)


@pytest.mark.parametrize('mask, message', [
    (np.full((8, 6), 0), 'mask size 8x6 (HxW) differs from its image'),
    (np.full((8, 8), 7), 'got unexpected values [7]'),
])
def test_bad_mask_is_named(tmp_path, mask, message):
    write_image(tmp_path / 'img' / 'a.png')
    write_image(tmp_path / 'img' / 'b.png')
    write_mask(tmp_path / 'masks' / 'a.png', np.full((8, 8), 3))
    bad = write_mask(tmp_path / 'masks' / 'b.png', mask)
    (tmp_path / 'val.csv').write_text('image,labels\nimg/a.png,\nimg/b.png,\n')
    with pytest.raises(ValueError, match='1 of 2 samples') as err:
        HistoManifestDataset(
            data_root=str(tmp_path),
            ann_file='val.csv',
            seg_map_pattern='masks/{stem}.png',
            metainfo=dict(classes=CLASSES))
    assert f'{bad}: ' in str(err.value)
    assert message in str(err.value)


def test_mask_values_classes_background_and_ignore_are_fine(tmp_path):
    image = write_image(tmp_path / 'a.png', size=(2, 3))
    mask = write_mask(tmp_path / 'a_mask.png', [[0, 1, 2], [3, 255, 0]])
    info = dict(img_path=image, seg_map_path=mask)
    assert check_data_list([info], num_classes=3,
                           background_index=3) == [info]
    with pytest.raises(ValueError, match=r'unexpected values \[3\]'):
        check_data_list([info], num_classes=2, background_index=2)


def test_rgb_mask_and_unreadable_mask(tmp_path):
    image = write_image(tmp_path / 'a.png')
    rgb_mask = write_image(tmp_path / 'rgb_mask.png')
    cut_mask = truncate(write_mask(tmp_path / 'cut_mask.png',
                                   np.zeros((8, 8))))
    infos = [dict(img_path=image, seg_map_path=rgb_mask),
             dict(img_path=image, seg_map_path=cut_mask)]
    with pytest.raises(ValueError) as err:
        check_data_list(infos, num_classes=3, background_index=3)
    assert f'{rgb_mask}: expected a single-channel' in str(err.value)
    assert f'{cut_mask}: not a readable mask' in str(err.value)


def test_lazy_dataset_is_checked_once_at_full_init(tmp_path, monkeypatch):
    import protoprompt_mm.datasets.histo_seg_dataset as module
    calls = []
    original = module.check_data_list

    def counting(data_list, **kwargs):
        calls.append(len(data_list))
        return original(data_list, **kwargs)

    monkeypatch.setattr(module, 'check_data_list', counting)
    dataset = BCSSWSSSDataset(
        data_root=str(tmp_path), split='train', lazy_init=True)
    assert calls == []
    write_image(tmp_path / 'training' / 'a[1000].png')
    dataset.full_init()
    dataset.full_init()
    len(dataset)
    assert calls == [1]


def test_worker_count_is_checked(tmp_path):
    with pytest.raises(ValueError, match='check_workers must be >= 1'):
        BCSSWSSSDataset(
            data_root=str(tmp_path), split='train', check_workers=0,
            lazy_init=True)


def test_large_sets_show_a_progress_bar(tmp_path, monkeypatch):
    import protoprompt_mm.datasets.file_checks as module
    bars = []

    def progress_bar(task_num):
        bars.append(ProgressBar(task_num, file=io.StringIO()))
        return bars[-1]

    monkeypatch.setattr(module, 'ProgressBar', progress_bar)
    infos = [dict(img_path=write_image(tmp_path / f'{i}.png'))
             for i in range(3)]
    check_data_list(infos, num_classes=3, background_index=3)
    assert bars == []
    monkeypatch.setattr(module, 'PROGRESS_MIN_SAMPLES', 3)
    assert check_data_list(
        infos, num_classes=3, background_index=3, num_workers=2) == infos
    assert len(bars) == 1 and bars[0].completed == 3
    assert '3/3' in bars[0].file.getvalue()
