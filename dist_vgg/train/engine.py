"""The one small interface the loop trains through, and its PyTorch DDP implementation.

An engine owns the wrapped model, the optimiser and loss scaling. The loop calls `micro_step` for each
micro-batch of an accumulation (gradients are all-reduced only on the last one) and `optimizer_step` once per
global batch. Checkpoint payloads go through `state_dict` / `load_state_dict` (our files, weights-only) and
`save_native` / `load_native` (an engine's own files, e.g. DeepSpeed's).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dist_vgg.train.comm import wrap_ddp
from dist_vgg.train.config import TrainConfig


class Engine(Protocol):
    model: nn.Module
    """The bare model (no wrapper): evaluation, weights and the model spec read it."""
    shards_optimizer: bool
    """True when optimiser state is split over ranks (resume then needs the same world size)."""

    def micro_step(
        self, images: torch.Tensor, labels: torch.Tensor, last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + backward of one micro-batch; returns (loss, logits), detached, on the device."""

    def optimizer_step(self, lr: float) -> None:
        """Apply the accumulated gradients with learning rate `lr`, then clear them."""

    def state_dict(self) -> dict:
        """Model/optimiser/scaler state for rank 0's checkpoint file (tensors and plain types only)."""

    def load_state_dict(self, state: dict) -> None: ...

    def save_native(self, ckpt_dir: Path, tag: str) -> None:
        """Engine-specific files (every rank calls it)."""

    def load_native(self, ckpt_dir: Path, tag: str) -> None: ...


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def sgd(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """The paper's optimiser: SGD, momentum 0.9, weight decay 5e-4 on every parameter (as Caffe did)."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.peak_lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )


class DDPEngine:
    """PyTorch DistributedDataParallel (or the bare model for one process)."""

    shards_optimizer = False

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        device: torch.device,
        precision: str,
        accumulation: int,
        distributed: bool,
    ) -> None:
        self.model = model
        self.device = device
        self.accumulation = accumulation
        self.dtype = autocast_dtype(precision)
        wrapped: nn.Module = model
        if distributed:
            # buckets and the optional bf16 compression hook come from the [comm] section
            wrapped = wrap_ddp(model, cfg.comm, device_ids=[device.index] if device.type == "cuda" else None)
        self.ddp = wrapped if distributed else None
        self.forward = torch.compile(wrapped) if cfg.runtime.compile else wrapped
        self.optimizer = sgd(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def micro_step(
        self, images: torch.Tensor, labels: torch.Tensor, last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # grad-sync only on the last micro-step of an accumulation
        sync = contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync()
        with sync:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.forward(images)
            loss = F.cross_entropy(logits.float(), labels)
            self.scaler.scale(loss / self.accumulation).backward()
        return loss.detach(), logits.detach()

    def optimizer_step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save_native(self, ckpt_dir: Path, tag: str) -> None:
        pass

    def load_native(self, ckpt_dir: Path, tag: str) -> None:
        pass
