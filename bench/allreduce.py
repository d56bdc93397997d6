"""Measured gloo all-reduce on loopback between 2 processes: the α (per-call latency) and bus bandwidth that
`bench/scaling_model.py` is fed with for its CPU sanity check.

Reference (the physical limit here): one core's memory-copy bandwidth, measured in the same run. A 2-rank
all-reduce moves each byte through a socket buffer and a reduction, so it can only reach a fraction of it.

    .venv/bin/python bench/allreduce.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dist_vgg.launch import destroy_process_group

SIZES_MB = (0.25, 1.0, 4.0, 16.0, 48.0)
"""fp32 payloads (MiB) timed; the fit t = α + bytes / bandwidth is taken over all of them."""


@dataclass(frozen=True)
class AllReduceFit:
    """t(bytes) = latency_s + bytes / bus_bytes_per_s for a 2-rank all-reduce (ring: 2(n−1)/n = 1 byte per byte)."""

    latency_s: float
    bus_bytes_per_s: float
    points: tuple[tuple[int, float], ...]
    """(bytes, median seconds) as measured."""

    def time(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bus_bytes_per_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=120),
    )


def _entry(rank: int, port: int, fn: Callable, args: tuple, out_dir: str) -> None:
    _init(rank, port)
    try:
        result = fn(rank, *args)
        if rank == 0:
            torch.save(result, os.path.join(out_dir, "result.pt"))
        destroy_process_group()
    except BaseException:
        destroy_process_group(together=False)
        raise


def run_two_ranks(fn: Callable, *args: object) -> object:
    """Run `fn(rank, *args)` in 2 fresh processes joined by a gloo group on loopback (1 thread each) and return
    rank 0's result. `fn` must be a module-level function (it is pickled into the children)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_entry, args=(free_port(), fn, args, tmp), nprocs=2, join=True)
        return torch.load(Path(tmp) / "result.pt", weights_only=False)


def _time_allreduce(rank: int, sizes_mb: tuple[float, ...], reps: int) -> list[tuple[int, float]]:
    out = []
    for mb in sizes_mb:
        t = torch.ones(int(mb * 2**20 / 4))
        dist.all_reduce(t)  # warm-up: connection buffers, page faults
        times = []
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        out.append((t.numel() * 4, statistics.median(times)))
    return out


def fit(points: list[tuple[int, float]]) -> AllReduceFit:
    """Least-squares line through (bytes, seconds); a negative intercept (noise) is clipped to 0."""
    n = len(points)
    mx = sum(b for b, _ in points) / n
    my = sum(t for _, t in points) / n
    sxx = sum((b - mx) ** 2 for b, _ in points)
    slope = sum((b - mx) * (t - my) for b, t in points) / sxx
    intercept = max(0.0, my - slope * mx)
    return AllReduceFit(intercept, 1.0 / slope, tuple(points))


def measure(sizes_mb: tuple[float, ...] = SIZES_MB, reps: int = 5) -> AllReduceFit:
    return fit(run_two_ranks(_time_allreduce, sizes_mb, reps))


def memcpy_bytes_per_s(mb: float = 48.0, reps: int = 7) -> float:
    """One thread copying an fp32 buffer: read + write counted once each, as a stream benchmark does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        src = torch.ones(int(mb * 2**20 / 4))
        dst = torch.empty_like(src)
        dst.copy_(src)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
        return 2 * src.numel() * 4 / statistics.median(times)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="timed all-reduces per size (median taken)")
    args = ap.parse_args(argv)
    result = measure(reps=args.reps)
    copy_bw = memcpy_bytes_per_s()
    for nbytes, secs in result.points:
        print(f"all_reduce {nbytes / 2**20:7.2f} MiB fp32, 2 ranks: {secs * 1e3:8.2f} ms")
    print(
        f"fit: latency {result.latency_s * 1e6:.0f} us, bus bandwidth {result.bus_bytes_per_s / 1e9:.2f} GB/s"
    )
    print(f"one-core memcpy: {copy_bw / 1e9:.2f} GB/s")
    small_bytes, small_s = result.points[0]
    print(f"RESULT gloo_loopback_allreduce_{small_bytes // 1024}KiB {small_s * 1e6:.0f} us ratio=n/a")
    print(
        f"RESULT gloo_loopback_allreduce_busbw {result.bus_bytes_per_s / 1e9:.3f} GB/s "
        f"ratio={result.bus_bytes_per_s / copy_bw:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
