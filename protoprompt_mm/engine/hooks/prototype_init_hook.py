"""PrototypeInitHook: k-means prototypes from an image bank before training."""
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ...apis import (build_frozen_model, build_prototype_record,
                     find_prototype_bank, save_prototype_file)
from ...utils import load_config

ENCODER_KEYS = ('config', 'checkpoint')


@HOOKS.register_module()
class PrototypeInitHook(Hook):
    """Initialise the PrototypeBank from single-label images before training.

    In ``before_train`` the images of the image bank are embedded and
    clustered into K prototypes per class (see
    :func:`~protoprompt_mm.apis.build_prototype_bank`
    for the embedding, the fallback and DDP: rank 0 reads the image bank,
    and an error there is raised on every rank instead of leaving the others
    waiting for its prototypes) and loaded with
    ``PrototypeBank.load_prototypes``. Nothing happens when a checkpoint was
    resumed or loaded through ``load_from`` (its prototypes win), or when
    the bank was initialised from its ``init_prototypes`` file.

    Example::

        custom_hooks = [
            dict(type='PrototypeInitHook', max_images_per_class=64,
                 image_bank=dict(batch_size=16),
                 encoder=dict(config='configs/stage1.py',
                              checkpoint='work_dirs/stage1/iter_4000.pth'),
                 save_path='prototypes_init.pth')
        ]

    Args:
        image_bank: Dataloader config of the image bank with optional keys
            ``dataset``, ``batch_size`` and ``num_workers``. Without
            ``dataset.type``, ``train_dataloader.dataset`` of the runner's
            config is reused (its keys overridden by ``dataset``) with a
            test-style pipeline; e.g. ``dict(dataset=dict(
            pseudo_mask_dir=None))`` reads no stage-2 masks. See
            :func:`~protoprompt_mm.datasets.build_image_bank_dataloader`.
        encoder: ``dict(config=..., checkpoint=...)``: a frozen segmentor
            (e.g. a stage-1 checkpoint) whose backbone and PrototypeBank
            embed the images instead of the model being trained; its
            ``embed_dim`` must match. Local files only.
        max_images_per_class: Cap of single-label images per class.
        num_iters: k-means iterations.
        seed: k-means seed.
        tissue_threshold: Pixels whose channels all exceed this (uint8
            scale) are white glass and left out of the image means; 255 or
            more keeps every pixel.
        save_path: Optional file for the prototypes (format of
            ``tools/build_prototype_bank.py``); relative paths are in the
            work dir. Written by the main process.
    """

    priority = 'NORMAL'

    def __init__(self,
                 image_bank: Optional[dict] = None,
                 encoder: Optional[dict] = None,
                 max_images_per_class: int = 64,
                 num_iters: int = 50,
                 seed: int = 0,
                 tissue_threshold: float = 220.0,
                 save_path: Optional[str] = None) -> None:
        if encoder is not None and set(encoder) != set(ENCODER_KEYS):
            raise ValueError(
                f'PrototypeInitHook: encoder must be a dict with exactly the '
                f'keys {list(ENCODER_KEYS)}, got {sorted(encoder)}')
        if max_images_per_class < 1:
            raise ValueError('PrototypeInitHook: max_images_per_class must '
                             f'be >= 1, got {max_images_per_class}')
        self.image_bank = image_bank
        self.encoder = encoder
        self.max_images_per_class = max_images_per_class
        self.num_iters = num_iters
        self.seed = seed
        self.tissue_threshold = tissue_threshold
        self.save_path = save_path

    def before_train(self, runner) -> None:
        """Build and load the prototypes unless a checkpoint provides them.

        Args:
            runner: The mmengine runner.

        Raises:
            TypeError: If the model has no PrototypeBank neck.
        """
        bank = find_prototype_bank(runner.model)
        if runner._has_loaded:
            print_log(
                'PrototypeInitHook: skipped, the prototypes come from the '
                'resumed / loaded checkpoint',
                logger='current')
            return
        if bank.init_prototypes is not None:
            print_log(
                'PrototypeInitHook: skipped, the prototypes come from '
                f'init_prototypes={bank.init_prototypes}',
                logger='current')
            return
        encoder = None
        if self.encoder is not None:
            encoder = build_frozen_model(
                load_config(self.encoder['config']),
                self.encoder['checkpoint']).to(bank.prototypes.device)
        record = build_prototype_record(
            runner.model,
            runner.cfg.get('train_dataloader'),
            image_bank=self.image_bank,
            encoder=encoder,
            max_images_per_class=self.max_images_per_class,
            num_iters=self.num_iters,
            seed=self.seed,
            tissue_threshold=self.tissue_threshold)
        bank.load_prototypes(record['prototypes'])
        source = 'the trained model' if encoder is None else \
            f"encoder {self.encoder['checkpoint']}"
        print_log(
            f'PrototypeInitHook: loaded k-means prototypes '
            f"{tuple(record['prototypes'].shape)} embedded by {source}",
            logger='current')
        if self.save_path is not None and is_main_process():
            path = osp.join(runner.work_dir, self.save_path)
            record['meta']['encoder'] = None if encoder is None else dict(
                self.encoder)
            save_prototype_file(path, record)
            print_log(f'PrototypeInitHook: saved the prototypes to {path}',
                      logger='current')
