"""Gradient communication for DDP: bucket size and optional bf16 compression of the all-reduce.

Why these two knobs: VGG's gradient is ~553 MB in fp32 (138 M parameters), 75 % of it in FC-6, whose gradient is
ready first in the backward pass. Buckets let each all-reduce start while the convs are still running backward
(overlap); bf16 compression halves the bytes on the wire, which is what an inter-node link of 400 Gb/s per GPU
needs at small per-GPU batches (see `bench/scaling_model.py`). The bucket size is a DDP *constructor* argument,
so it goes in through `ddp_kwargs(cfg)`; the compression is a comm hook that `apply_comm` registers afterwards.
`wrap_ddp` does both.
"""

# No `from __future__ import annotations` here: DDP checks the comm hook's annotations at runtime and
# refuses a hook whose `bucket` annotation is the string "dist.GradBucket" instead of the class.
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

COMPRESSIONS = ("none", "bf16")
"""`none`: fp32 all-reduce, bit-for-bit the average; `bf16`: gradients cast to bfloat16 for the wire."""


@dataclass(frozen=True)
class CommConfig:
    """How DDP communicates gradients. The defaults are PyTorch's (25 MiB buckets, fp32): exact averaging."""

    bucket_cap_mb: float = 25.0
    """Size of one all-reduce bucket in MiB. Smaller buckets start communicating earlier in the backward pass but
    pay a latency per bucket; a parameter larger than the cap (VGG's FC-6 weight, 411 MB in fp32) always gets a
    bucket of its own, so this only regroups the convs and the small FC layers. Being set explicitly, it also
    sizes DDP's first bucket (PyTorch's unset default makes that one 1 MiB)."""
    compress: str = "none"
    """`none` (exact fp32 average) or `bf16` (cast each bucket to bfloat16, average, cast back: half the bytes on
    the wire; each averaged gradient carries bf16 rounding: at most 2⁻⁷ of the mean |gradient| over ranks)."""
    gradient_as_bucket_view: bool = True
    """Let `.grad` tensors alias DDP's buckets instead of copying into them: saves one gradient-sized buffer
    (553 MB for VGG-16 in fp32) and one copy per step. Numerically identical either way."""

    def __post_init__(self) -> None:
        if not self.bucket_cap_mb > 0:
            raise ValueError(
                f"comm.bucket_cap_mb must be > 0 (got {self.bucket_cap_mb}); PyTorch's default is 25"
            )
        if self.compress not in COMPRESSIONS:
            raise ValueError(
                f"comm.compress must be one of {', '.join(COMPRESSIONS)} (got {self.compress!r})"
            )


def ddp_kwargs(cfg: CommConfig) -> dict[str, Any]:
    """The `DistributedDataParallel(...)` keyword arguments that `cfg` fixes at construction time."""
    return {"bucket_cap_mb": cfg.bucket_cap_mb, "gradient_as_bucket_view": cfg.gradient_as_bucket_view}


def apply_comm(ddp_model: DistributedDataParallel, cfg: CommConfig) -> None:
    """Register `cfg`'s compression hook on an already-built DDP model, after checking that the model was built
    with `cfg`'s bucket size (which DDP cannot change afterwards)."""
    if not isinstance(ddp_model, DistributedDataParallel):
        raise TypeError(
            f"apply_comm needs a DistributedDataParallel model (got {type(ddp_model).__name__}); "
            "wrap it with dist_vgg.train.comm.wrap_ddp(model, cfg)"
        )
    built_cap = getattr(ddp_model, "bucket_bytes_cap", None)
    wanted_cap = int(cfg.bucket_cap_mb * 1024 * 1024)
    if built_cap is not None and built_cap != wanted_cap:
        raise ValueError(
            f"the DDP model was built with bucket_cap_mb={built_cap / 2**20:.4g} but comm.bucket_cap_mb="
            f"{cfg.bucket_cap_mb:g}; build it with DistributedDataParallel(model, **ddp_kwargs(cfg)) "
            "or dist_vgg.train.comm.wrap_ddp(model, cfg)"
        )
    if cfg.compress == "bf16":
        ddp_model.register_comm_hook(None, bf16_average_hook)


def bf16_average_hook(
    process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: average one bucket in bfloat16 and write the result back into the fp32 bucket.

    The same arithmetic as PyTorch's `default_hooks.bf16_compress_hook`, which DDP refuses to register unless
    it runs on CUDA with NCCL ≥ 2.10; gloo all-reduces bfloat16 fine, so this one hook serves CPU tests and GPUs.
    """
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(group.size())

    def decompress(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        buffer.copy_(fut.value()[0])
        return buffer

    return dist.all_reduce(compressed, group=group, async_op=True).get_future().then(decompress)


def wrap_ddp(
    model: nn.Module, cfg: CommConfig, device_ids: list[int] | None = None
) -> DistributedDataParallel:
    """Build DDP around `model` with `cfg`'s buckets and compression. Needs an initialised process group."""
    if not torch.distributed.is_initialized():
        raise RuntimeError(
            "wrap_ddp needs torch.distributed to be initialised first: call dist_vgg.launch.init_process_group"
        )
    ddp = DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs(cfg))
    apply_comm(ddp, cfg)
    return ddp


def bf16_average_tolerance(per_rank_abs_mean: torch.Tensor) -> torch.Tensor:
    """Element-wise bound on |bf16-averaged − exact average| for 2 ranks. bf16 keeps 8 significant bits, so one
    rounding costs at most u = 2⁻⁸ of the value: each halved input is rounded once (≤ u·|g_r|/2 each, ≤ u·mean_r|g_r|
    together) and the sum once more (≤ u·|average| ≤ u·mean_r|g_r|), in all ≤ 2⁻⁷·mean_r|g_r|; plus the smallest
    bf16 normal for values that underflow."""
    return per_rank_abs_mean * 2.0**-7 + torch.finfo(torch.bfloat16).tiny
