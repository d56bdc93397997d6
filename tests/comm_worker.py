"""One rank of the gradient-communication equivalence check, launched by `torchrun --nproc_per_node 2`
from tests/test_comm.py: real processes, a real gloo process group, the project's own launch path.

Every rank builds the same tiny VGG, takes its own slice of one global batch, runs one DDP backward with the
CommConfig given on the command line, and rank 0 writes JSON with the differences to (a) the single-process
gradient of the whole batch and (b) the exact average of the per-rank gradients, plus the bf16 tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from dist_vgg.launch import destroy_process_group, detect, init_process_group
from dist_vgg.models import VGGSpec, build_vgg
from dist_vgg.train.comm import CommConfig, apply_comm, bf16_average_tolerance, wrap_ddp

PER_RANK = 4


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bucket-cap-mb", type=float, required=True)
    ap.add_argument("--compress", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = CommConfig(bucket_cap_mb=args.bucket_cap_mb, compress=args.compress)

    launch = detect()
    init_process_group(launch, "cpu", timeout_s=60)
    rank, world = launch.rank, launch.world_size
    spec = VGGSpec("A", num_classes=5, width=1 / 16, crop=32, dropout=0.0)

    torch.manual_seed(0)
    model = build_vgg(**spec.to_dict())
    reference = build_vgg(**spec.to_dict())
    reference.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    images = torch.randn(PER_RANK * world, 3, spec.crop, spec.crop, generator=g)
    labels = torch.randint(0, spec.num_classes, (PER_RANK * world,), generator=g)
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    loss_fn = nn.CrossEntropyLoss()

    # This rank's own gradient, then the exact fp32 average over ranks (the quantity DDP should produce).
    local = build_vgg(**spec.to_dict())
    local.load_state_dict(model.state_dict())
    loss_fn(local(images[mine]), labels[mine]).backward()
    local_grads = _grads(local)
    abs_mean = [gr.abs() / world for gr in local_grads]
    for t in abs_mean:
        dist.all_reduce(t)
    exact = [gr.clone() for gr in local_grads]
    for t in exact:
        dist.all_reduce(t)
        t.div_(world)

    ddp = wrap_ddp(model, cfg)
    # DDP starts with one bucket and regroups parameters by `bucket_cap_mb` after the first step, in the order
    # their gradients became ready: the second step is the one every later step looks like.
    loss_fn(ddp(images[mine]), labels[mine]).backward()
    ddp.zero_grad(set_to_none=False)
    loss_fn(ddp(images[mine]), labels[mine]).backward()
    ddp_grads = _grads(model)
    num_buckets = len(ddp.reducer._get_zeros_like_grad_buckets())

    # A DDP model built with another bucket size must be refused, naming both values.
    mismatch_error = ""
    try:
        apply_comm(ddp, CommConfig(bucket_cap_mb=cfg.bucket_cap_mb * 2))
    except ValueError as e:
        mismatch_error = str(e)

    if rank == 0:
        loss_fn(reference(images), labels).backward()
        single = _grads(reference)
        result = {
            "world": world,
            "num_buckets": num_buckets,
            "max_abs_vs_single": max((a - b).abs().max().item() for a, b in zip(ddp_grads, single)),
            "max_abs_vs_exact": max((a - b).abs().max().item() for a, b in zip(ddp_grads, exact)),
            "max_excess_over_bf16_bound": max(
                ((a - b).abs() - bf16_average_tolerance(m)).max().item()
                for a, b, m in zip(ddp_grads, exact, abs_mean)
            ),
            "max_abs_grad": max(gr.abs().max().item() for gr in exact),
            "grads_differ_from_exact": any(not torch.equal(a, b) for a, b in zip(ddp_grads, exact)),
            "mismatch_error": mismatch_error,
        }
        with open(args.out, "w") as f:
            json.dump(result, f)
    del ddp
    destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
