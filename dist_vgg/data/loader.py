"""What the trainer and evaluation see of the input pipeline: a `TrainLoader` (exactly `batches_per_epoch`
batches per epoch on every rank, resumable position) and `EvalBatch`es (every sample exactly once across
ranks). `SyntheticLoader` serves random on-device data for benchmarks and GPU checks without DALI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


class TrainLoader(Protocol):
    batches_per_epoch: int
    """Identical on every rank; logged at the start of training."""

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (each epoch's order differs)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images N×3×crop×crop on the device, labels N int64 on the device), `batches_per_epoch` times
        (fewer after `load_state_dict` restored a mid-epoch position: the rest of that epoch)."""

    def state_dict(self) -> dict:
        """Position (epoch, batches consumed) and random state; only plain types and tensors, so it
        round-trips through `torch.load(weights_only=True)`."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a position: the next batches are those an uninterrupted run would have produced."""


@dataclass
class EvalBatch:
    images: torch.Tensor
    """N×3×H×W; in whole-image mode every image of a batch has the same size (never padded)."""
    labels: torch.Tensor
    indices: torch.Tensor
    """Global sample index (position in the split), for exact-once accounting."""


class SyntheticLoader:
    """Random images and labels generated once on the device: the trainer's input when no data path is given
    (GPU throughput checks, benchmarks). Deterministic for a seed; its position is just the batch count."""

    def __init__(
        self,
        num_classes: int,
        crop: int,
        micro_batch: int,
        batches_per_epoch: int,
        device: torch.device,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        pool: int = 4,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches_per_epoch = batches_per_epoch
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self._images = [
            (torch.randn(micro_batch, 3, crop, crop, generator=g) * 50)
            .to(device=device, dtype=dtype)
            .contiguous(memory_format=fmt)
            for _ in range(pool)
        ]
        self._labels = [
            torch.randint(0, num_classes, (micro_batch,), generator=g).to(device) for _ in range(pool)
        ]
        self._epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._start = 0
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._start = self._start, 0
        for i in range(start, self.batches_per_epoch):
            k = (self._epoch * self.batches_per_epoch + i) % len(self._images)
            self._position = i + 1
            yield self._images[k], self._labels[k]

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "position": getattr(self, "_position", 0)}

    def load_state_dict(self, state: dict) -> None:
        self._epoch = int(state["epoch"])
        self._start = int(state["position"]) % max(1, self.batches_per_epoch)
