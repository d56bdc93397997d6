"""`dist-vgg preflight`: the short all-reduce check the SLURM scripts run (one task per GPU, like training)
before training starts. Rank 0 prints the bandwidth per node and names a slow node; exit 1 when a node is
below `--min-gbps` or a rank cannot join within `--timeout-s`."""

from __future__ import annotations

import argparse
import sys

import torch

from dist_vgg import launch as launch_env
from dist_vgg.preflight import PreflightConfig, dump_flight_recorder, measure


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto", help="cuda (NCCL) or cpu (gloo)"
    )
    p.add_argument("--size-mb", type=float, default=PreflightConfig.size_mb, help="message size in MiB")
    p.add_argument("--iters", type=int, default=PreflightConfig.iters, help="timed repetitions")
    p.add_argument(
        "--slow-fraction",
        type=float,
        default=PreflightConfig.slow_fraction,
        help="a node below this fraction of the median is named slow",
    )
    p.add_argument(
        "--min-gbps", type=float, default=0.0, help="fail when a node is below this (GB/s); 0: report only"
    )
    p.add_argument(
        "--timeout-s", type=float, default=120.0, help="process-group timeout: a missing rank fails the check"
    )


def run(args: argparse.Namespace) -> int:
    try:
        cfg = PreflightConfig(args.size_mb, args.iters, args.slow_fraction, args.min_gbps)
        env = launch_env.detect()
    except (ValueError, launch_env.LaunchError) as e:
        print(f"preflight: {e}", file=sys.stderr)
        return 1
    device_type = args.device
    if device_type == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda" and not torch.cuda.is_available():
        print(
            "preflight: --device cuda but this task sees no GPU: request GPUs or use --device cpu",
            file=sys.stderr,
        )
        return 1
    device = torch.device("cuda", env.local_rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    if not env.distributed:
        print(f"preflight: one process ({env.launcher}): nothing to measure")
        return 0
    try:
        launch_env.init_process_group(env, device_type, timeout_s=args.timeout_s)
        report = measure(env, device, cfg)
        ok = True
        if report is not None:
            print("\n".join(report.lines()), flush=True)
            ok = not (cfg.min_gbps > 0 and report.slow)
        # Every rank leaves with rank 0's verdict, so srun sees one answer.
        verdict = torch.tensor([1.0 if ok else 0.0], device=device)
        torch.distributed.broadcast(verdict, 0)
        ok = bool(verdict.item())
    except RuntimeError as e:  # a rank that never joins, or a collective that times out
        print(f"preflight: rank {env.rank} on {env.node_name}: communication failed: {e}", file=sys.stderr)
        dumped = dump_flight_recorder(env.rank)
        if dumped is not None:
            print(f"preflight: rank {env.rank}: flight recorder written to {dumped}", file=sys.stderr)
        launch_env.destroy_process_group(together=False)
        return 1
    launch_env.destroy_process_group()
    if not ok:
        if env.is_main:
            print(f"preflight: a node is below --min-gbps {cfg.min_gbps:g}: stopping", file=sys.stderr)
        return 1
    return 0
