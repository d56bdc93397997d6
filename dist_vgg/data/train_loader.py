"""The training loader both paths share: epoch bookkeeping, resumable position, and device hand-off.

A backend (`cpu_pipeline.CpuBackend` or `dali_pipeline.DaliBackend`) only turns "batch b of epoch e" into
pixels; which samples and which random draws that batch holds is decided here, by `BatchReader`, from
(seed, epoch, rank, b) alone. So a position is just (epoch, batches consumed) and the state is plain ints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from dist_vgg.data.augment import BatchParams, draw_params
from dist_vgg.data.config import AugmentConfig
from dist_vgg.data.dataset import SplitIndex
from dist_vgg.data.sampler import EpochPlan

log = logging.getLogger("dist_vgg.data")


@dataclass
class RawBatch:
    """What a backend needs for one batch: encoded images, labels and the batch's random draws."""

    jpegs: list[bytes]
    labels: np.ndarray
    params: BatchParams
    indices: np.ndarray
    """Global sample positions (for tests and debugging)."""


class BatchReader:
    """Batch b of epoch e for one rank: its samples (from the plan) and their random parameters."""

    def __init__(self, index: SplitIndex, plan: EpochPlan, aug: AugmentConfig, seed: int, rank: int) -> None:
        self.index, self.plan, self.aug, self.seed, self.rank = index, plan, aug, seed, rank
        self._rows: tuple[int, np.ndarray] | None = None

    def rows(self, epoch: int) -> np.ndarray:
        if self._rows is None or self._rows[0] != epoch:
            self._rows = (epoch, self.plan.rank_batches(self.seed, epoch, self.rank))
        return self._rows[1]

    def read(self, epoch: int, b: int) -> RawBatch:
        ids = self.rows(epoch)[b]
        jpegs, labels = [], np.empty(len(ids), dtype=np.int64)
        for k, i in enumerate(ids):
            jpeg, labels[k] = self.index.read(int(i))
            jpegs.append(jpeg)
        params = draw_params(self.aug, len(ids), self.seed, epoch, self.rank, b)
        return RawBatch(jpegs, labels, params, ids)


def to_training_layout(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A backend's (float NCHW images, int64 labels) as the trainer wants them: on `device`, in `dtype` and
    `memory_format` (channels-last when asked). Shared by every DALI source and the CPU path."""
    x = x.to(device, non_blocking=True).to(dtype).contiguous(memory_format=memory_format)
    return x, y.to(device, non_blocking=True)


class Backend(Protocol):
    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches start … batches_per_epoch−1 of `epoch`: (float N×3×crop×crop normalised, labels int64)."""


class IndexedTrainLoader:
    """`TrainLoader` over a prepared split (see `loader.TrainLoader` for the contract)."""

    def __init__(
        self,
        reader: BatchReader,
        backend: Backend,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
        name: str,
    ) -> None:
        self.reader, self.backend, self.device, self.dtype = reader, backend, device, dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batches_per_epoch = reader.plan.batches_per_epoch
        self.name = name
        self._epoch, self._start, self._position = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._start = 0
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._start = self._start, 0
        self._position = start
        for b, (x, y) in enumerate(self.backend.batches(self._epoch, start), start):
            self._position = b + 1
            yield to_training_layout(x, y, self.device, self.dtype, self.memory_format)
        # a finished epoch resumes at its end: the next set_epoch moves on
        self._start = self._position

    def state_dict(self) -> dict:
        plan = self.reader.plan
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.reader.seed,
            "world_size": plan.world_size,
            "micro_batch": plan.micro_batch,
            "samples": plan.samples,
        }

    def load_state_dict(self, state: dict) -> None:
        plan = self.reader.plan
        epoch, position = int(state["epoch"]), int(state["position"])
        saved = (int(state["world_size"]), int(state["micro_batch"]), int(state["samples"]))
        now = (plan.world_size, plan.micro_batch, plan.samples)
        if saved != now and 0 < position < self.batches_per_epoch:
            raise ValueError(
                f"cannot resume mid-epoch {epoch} (batch {position}) with a different world size, micro batch "
                f"or dataset (saved {saved}, now {now}): the epoch's sample assignment would change; "
                "resume with the original layout or from an epoch boundary"
            )
        if int(state["seed"]) != self.reader.seed:
            raise ValueError(
                f"data position was saved with seed {state['seed']}, this run uses {self.reader.seed}"
            )
        if saved != now:  # an epoch boundary: done stays done, not started stays not started
            position = self.batches_per_epoch if position else 0
        self._epoch = epoch
        self._start = self._position = position
