"""Evaluation inputs: rescale so the shorter side is Q, then a centre crop or the whole image.

Every sample of the split is read exactly once across ranks (each rank a contiguous share, no padding, so
nothing needs masking) and in a fixed order. Whole images keep their rescaled size: a batch only groups
images of equal size (never padded), sorted by size then position; `EvalBatch.indices` are the global
positions, for exact-once accounting. Decoding uses the CPU path's decoder and the shared resize filter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dist_vgg.data.augment import crop_box, decode_rgb, rescaled_size, resize_box
from dist_vgg.data.dataset import SplitIndex
from dist_vgg.data.loader import EvalBatch
from dist_vgg.weights import Preprocessing


def plan_eval_batches(
    index: SplitIndex, lo: int, hi: int, q: int, crop: int | None, batch_size: int
) -> list[np.ndarray]:
    """Global positions per batch for samples [lo, hi): consecutive for crops, grouped by rescaled size for
    whole images (sizes from the samples' .json metadata, so nothing is decoded to plan)."""
    ids = np.arange(lo, hi)
    if crop is not None:
        return [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i in ids:
        meta = json.loads(index.read_meta(int(i)))
        groups.setdefault(rescaled_size(int(meta["height"]), int(meta["width"]), q), []).append(int(i))
    out = []
    for size in sorted(groups):
        members = np.array(groups[size])
        out += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return out


class _EvalBatches(Dataset):
    def __init__(self, index: SplitIndex, batches: list[np.ndarray], q: int, crop: int | None) -> None:
        self.index, self.batches, self.q, self.crop = index, batches, q, crop

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        imgs, labels = [], []
        for i in self.batches[b]:
            jpeg, label = self.index.read(int(i))
            img = decode_rgb(jpeg)
            h, w = img.shape[:2]
            if self.crop is None:
                out_hw = rescaled_size(h, w, self.q)
                box = (0.0, 0.0, float(h), float(w))
            else:
                out_hw = (self.crop, self.crop)
                box = crop_box(h, w, self.q, self.crop, 0.5, 0.5)
            imgs.append(resize_box(img, box, out_hw))
            labels.append(label)
        if len({im.shape for im in imgs}) != 1:
            raise ValueError(
                f"{self.index.split} samples {self.batches[b].tolist()} differ in size after rescaling although "
                "their .json metadata says otherwise; the shard metadata is wrong: re-run data_prep"
            )
        return (
            torch.from_numpy(np.stack(imgs)),
            torch.tensor(labels, dtype=torch.int64),
            torch.from_numpy(self.batches[b].astype(np.int64)),
        )


def eval_batches(
    index: SplitIndex,
    lo: int,
    hi: int,
    *,
    q: int,
    crop: int | None,
    batch_size: int,
    device: torch.device,
    preprocessing: Preprocessing,
    workers: int,
) -> Iterator[EvalBatch]:
    batches = plan_eval_batches(index, lo, hi, q, crop, batch_size)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    loader = DataLoader(
        _EvalBatches(index, batches, q, crop),
        batch_size=None,
        num_workers=min(workers, len(batches)),
        pin_memory=device.type == "cuda",
    )
    for imgs, labels, indices in loader:
        x = imgs.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x * preprocessing.scale - mean) / std
        yield EvalBatch(x.contiguous(), labels.to(device), indices)
