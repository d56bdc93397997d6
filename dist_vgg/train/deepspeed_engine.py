"""The DeepSpeed engine (ZeRO stage 0, 1 or 2) behind the loop's `Engine` interface.

The paper's SGD runs as DeepSpeed's "SGD" optimiser (no compiled ops needed; ZeRO-1/2 with it needs
`zero_allow_untested_optimizer`). DeepSpeed does its own gradient accumulation: `step()` is called after every
micro-batch and only the last one of an accumulation all-reduces and updates.

Checkpoints: DeepSpeed's `save_checkpoint` (every rank) writes into the checkpoint's `deepspeed/` folder; its
loader unpickles, so it is used only to resume this run from its own folder. Rank 0's dist-vgg file also holds
the full model weights (ZeRO ≤ 2 keeps full parameters on every rank), which is the weights-only path that
`load_weights`, eval, export and `--init-from` use.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dist_vgg.checkpoint import DEEPSPEED_DIR, CheckpointError
from dist_vgg.train.config import BatchSplit, ConfigError, TrainConfig
from dist_vgg.train.engine import autocast_dtype


def ds_config(cfg: TrainConfig, split: BatchSplit, precision: str) -> dict:
    return {
        "train_batch_size": split.global_batch,
        "train_micro_batch_size_per_gpu": split.micro_batch,
        "gradient_accumulation_steps": split.accumulation,
        "optimizer": {
            "type": "SGD",
            "params": {
                "lr": cfg.optim.peak_lr,
                "momentum": cfg.optim.momentum,
                "weight_decay": cfg.optim.weight_decay,
            },
        },
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "gradient_clipping": 0.0,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _single_process_group(device: torch.device, timeout_s: float) -> None:
    """DeepSpeed needs a process group even for one process."""
    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


class DeepSpeedEngine:
    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        device: torch.device,
        precision: str,
        split: BatchSplit,
        local_rank: int,
    ) -> None:
        try:
            import deepspeed
        except ImportError:
            raise ConfigError(
                "runtime.engine=deepspeed but DeepSpeed is not installed: `DS_BUILD_OPS=0 pip install deepspeed` "
                "(or use runtime.engine=ddp)"
            ) from None
        if cfg.runtime.compile:
            raise ConfigError(
                "runtime.compile is supported with the ddp engine only; set runtime.compile=false"
            )
        if cfg.comm.compress != "none":
            raise ConfigError(
                f"comm.compress={cfg.comm.compress!r} is supported with the ddp engine only; set "
                'comm.compress="none" with runtime.engine=deepspeed'
            )
        _single_process_group(device, cfg.runtime.pg_timeout_s)
        # DeepSpeed insists on reading LOCAL_RANK itself; we hand it the launch module's value (not a re-read)
        os.environ["LOCAL_RANK"] = str(local_rank)
        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
        self.shards_optimizer = cfg.deepspeed.zero_stage > 0
        self.dtype = autocast_dtype(precision)
        self.device = device
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=ds_config(cfg, split, precision)
        )
        self.model = self.ds.module

    def micro_step(
        self, images: torch.Tensor, labels: torch.Tensor, last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dtype is not None:
            images = images.to(self.dtype)
        logits = self.ds(images)
        loss = F.cross_entropy(logits.float(), labels)
        self.ds.backward(loss)  # DeepSpeed divides by the accumulation itself
        if not last:
            self.ds.step()  # counts the micro-step; no update and no all-reduce before the boundary
        return loss.detach(), logits.detach()

    def optimizer_step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ds.step()

    def state_dict(self) -> dict:
        # full weights in fp32 for the weights-only path (ZeRO <= 2 holds full parameters on every rank)
        return {"model": {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        pass  # DeepSpeed restores model and optimiser from its own files (load_native)

    def save_native(self, ckpt_dir: Path, tag: str) -> None:
        self.ds.save_checkpoint(str(ckpt_dir / DEEPSPEED_DIR), tag=tag)

    def load_native(self, ckpt_dir: Path, tag: str) -> None:
        path, _ = self.ds.load_checkpoint(
            str(ckpt_dir / DEEPSPEED_DIR), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise CheckpointError(f"{ckpt_dir / DEEPSPEED_DIR} holds no DeepSpeed checkpoint {tag!r}")
