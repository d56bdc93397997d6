"""The training path without DALI: indexed reads + simplejpeg (libjpeg-turbo) + PIL's resampler in torch
DataLoader worker processes. Workers return uint8 crops (4× less to move than float); the mean/colour-shift
subtraction and the float conversion happen on the training device, as DALI's graph does at its end.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dist_vgg.data.augment import crop_box, decode_rgb, resize_box
from dist_vgg.data.train_loader import BatchReader


def augment_one(jpeg: bytes, s: int, crop: int, fx: float, fy: float, flip: bool) -> np.ndarray:
    """decode → rescale to shorter side s and take the crop at (fx, fy) (one box resize) → flip; HWC uint8."""
    img = decode_rgb(jpeg)
    out = resize_box(img, crop_box(img.shape[0], img.shape[1], s, crop, fx, fy), (crop, crop))
    return out[:, ::-1] if flip else out


class _Batches(Dataset):
    """Item (epoch, b) is batch b of that epoch, decoded and augmented in a worker."""

    def __init__(self, reader: BatchReader) -> None:
        self.reader = reader

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, b = key
        raw = self.reader.read(epoch, b)
        p, crop = raw.params, self.reader.aug.crop
        imgs = np.stack(
            [
                augment_one(j, int(p.scale[k]), crop, p.crop_x[k], p.crop_y[k], bool(p.flip[k]))
                for k, j in enumerate(raw.jpegs)
            ]
        )
        mean = np.asarray(self.reader.aug.mean_rgb) - p.color_shift  # shifting pixels by +c = mean − c
        return torch.from_numpy(imgs), torch.from_numpy(raw.labels), torch.from_numpy(mean.astype(np.float32))


class _Keys(Sampler):
    """The (epoch, batch) keys of the current pass; replaced per pass so the workers can persist."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class CpuBackend:
    """Decodes and augments in `workers` DataLoader processes; normalises on `device`."""

    def __init__(self, reader: BatchReader, workers: int, device: torch.device) -> None:
        self.reader, self.workers, self.device = reader, workers, device
        std = reader.aug.std_rgb or (1.0, 1.0, 1.0)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32)).to(device).view(1, 3, 1, 1)

        self.keys = _Keys()
        self.loader = DataLoader(
            _Batches(reader),
            batch_size=None,
            sampler=self.keys,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=2,
            persistent_workers=True,  # no re-fork per epoch
        )

    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.keys.keys = [(epoch, b) for b in range(start, self.reader.plan.batches_per_epoch)]
        if not self.keys.keys:
            return
        for imgs, labels, mean in self.loader:
            x = imgs.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            mean = mean.to(self.device, non_blocking=True).view(-1, 3, 1, 1)
            yield (x - mean) * self.inv_std, labels
