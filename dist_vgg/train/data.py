"""The trainer's side of the input: the pipeline's loaders when `data.path` is set, synthetic data otherwise.

The trainer builds no augmentation itself: it calls `dist_vgg.data`'s builders. Without a dataset it uses
`SyntheticLoader` (random on-device data, GPU checks) or, with `synthetic.learnable`, `IndexedSynthetic`:
images drawn per *global sample index* from a class pattern plus noise, so any split of a global batch over
ranks sees the same samples (exactness and resume tests) and accuracy can rise above chance.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from dist_vgg.data.config import IMAGENET_MEAN_RGB, AugmentConfig
from dist_vgg.data.loader import EvalBatch, SyntheticLoader, TrainLoader
from dist_vgg.train.config import BatchSplit, ConfigError, TrainConfig
from dist_vgg.weights import Preprocessing

VAL_STREAM = 1 << 40
"""Offset of validation sample indices in the synthetic sample space (disjoint from training indices)."""


def pipeline():
    """The input pipeline's public builders, or a clear error when this installation lacks them."""
    try:
        from dist_vgg import data as pipeline_module

        pipeline_module.build_train_loader  # noqa: B018 - presence check
        return pipeline_module
    except (ImportError, AttributeError):
        raise ConfigError(
            "data.path is set but this installation has no input pipeline (dist_vgg.data.build_train_loader); "
            "install dist-vgg with its data extras, or leave data.path empty for synthetic data"
        ) from None


def preprocessing(aug: AugmentConfig) -> Preprocessing:
    """What the saved weights expect as input (written into every checkpoint)."""
    return Preprocessing(
        mean=tuple(aug.mean_rgb or IMAGENET_MEAN_RGB), std=tuple(aug.std_rgb or (1.0, 1.0, 1.0))
    )


class IndexedSynthetic:
    """Learnable synthetic data addressed by global sample index (see module doc); TrainLoader protocol."""

    def __init__(
        self,
        cfg: TrainConfig,
        split: BatchSplit,
        rank: int,
        device: torch.device,
        num_classes: int,
        channels_last: bool,
    ) -> None:
        self.cfg, self.split, self.rank, self.device = cfg, split, rank, device
        self.crop = cfg.augment.crop
        self.num_classes = num_classes
        self.batches_per_epoch = cfg.synthetic.steps_per_epoch * split.accumulation
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        g = torch.Generator().manual_seed(cfg.runtime.seed + 12345)
        coarse = torch.randn(num_classes, 3, 4, 4, generator=g) * 50.0
        # smooth class patterns (4×4 upsampled): survive the net's pooling, unlike per-pixel noise
        self.patterns = torch.nn.functional.interpolate(coarse, size=(self.crop, self.crop), mode="bilinear")
        self.epoch = 0
        self._start = 0
        self._position = 0

    def sample(self, index: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.cfg.runtime.seed * 1_000_003 + index)
        label = int(torch.randint(0, self.num_classes, (1,), generator=g))
        noise = torch.randn(3, self.crop, self.crop, generator=g) * 50.0 * self.cfg.synthetic.noise
        return self.patterns[label] + noise, label

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample(i) for i in indices]
        images = torch.stack([p[0] for p in pairs]).to(self.device).contiguous(memory_format=self.fmt)
        return images, torch.tensor([p[1] for p in pairs], dtype=torch.int64, device=self.device)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.split
        start, self._start = self._start, 0
        epoch_base = self.epoch * self.cfg.synthetic.steps_per_epoch * s.global_batch
        for i in range(start, self.batches_per_epoch):
            step, micro = divmod(i, s.accumulation)
            first = epoch_base + step * s.global_batch + (micro * s.world_size + self.rank) * s.micro_batch
            self._position = i + 1
            yield self.batch(list(range(first, first + s.micro_batch)))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._start = self._position = int(state["position"])

    def eval_batches(self, world_size: int) -> Iterator[EvalBatch]:
        n, bs = self.cfg.synthetic.val_images, self.cfg.data.val_batch_size
        mine = list(range(self.rank, n, world_size))
        for k in range(0, len(mine), bs):
            idx = mine[k : k + bs]
            images, labels = self.batch([VAL_STREAM + i for i in idx])
            yield EvalBatch(images, labels, torch.tensor(idx))


class Inputs:
    """Train loader + validation batches for one rank, from the pipeline or synthetic."""

    def __init__(
        self,
        cfg: TrainConfig,
        split: BatchSplit,
        rank: int,
        device: torch.device,
        channels_last: bool,
        local_world_size: int = 1,
    ) -> None:
        self.cfg, self.split, self.rank, self.device = cfg, split, rank, device
        self.classes: list[str] | None = None
        self.synthetic = not cfg.data.path or cfg.data.loader == "synthetic"
        if self.synthetic:
            self.num_classes = cfg.model.num_classes or cfg.synthetic.num_classes
            if cfg.synthetic.learnable:
                self.train: TrainLoader = IndexedSynthetic(
                    cfg, split, rank, device, self.num_classes, channels_last
                )
            else:
                self.train = SyntheticLoader(
                    self.num_classes,
                    cfg.augment.crop,
                    split.micro_batch,
                    cfg.synthetic.steps_per_epoch * split.accumulation,
                    device,
                    seed=cfg.runtime.seed + rank,
                    channels_last=channels_last,
                )
            self._val = IndexedSynthetic(cfg, split, rank, device, self.num_classes, channels_last)
            return
        p = pipeline()
        info = p.dataset_info(cfg.data)
        self.num_classes = cfg.model.num_classes or info.num_classes
        if self.num_classes != info.num_classes:
            raise ConfigError(
                f"model.num_classes={cfg.model.num_classes} but {cfg.data.path} has {info.num_classes} classes; "
                "set model.num_classes=0 to take it from the data"
            )
        self.classes = getattr(info, "classes", None)
        self.train = p.build_train_loader(
            cfg.data,
            cfg.augment,
            micro_batch=split.micro_batch,
            rank=rank,
            world_size=split.world_size,
            device=device,
            seed=cfg.runtime.seed,
            num_classes=self.num_classes,
            channels_last=channels_last,
            local_world_size=local_world_size,
        )

    def eval_batches(self) -> Iterable[EvalBatch]:
        if self.synthetic:
            return self._val.eval_batches(self.split.world_size)
        p = pipeline()
        return p.build_eval_loader(
            self.cfg.data,
            q=self.cfg.val_scale,
            crop=self.cfg.augment.crop,
            batch_size=self.cfg.data.val_batch_size,
            rank=self.rank,
            world_size=self.split.world_size,
            device=self.device,
            preprocessing=p.preprocessing_for(self.cfg.augment),
        )
