"""A short communication check at the start of every job: measure the all-reduce and each node's links, print
the bandwidth per node and name a node that is much slower than the others — before weeks of GPU time are spent
waiting on it (one bad cable or a GPU stuck at a low link width slows every step of a synchronous job).

Three figures, each cheap:
- the world all-reduce (what training does every step), as bus bandwidth;
- per node, an all-reduce among that node's own ranks (NVLink / PCIe; skipped when a node has one rank);
- per node, a ping-pong between its first rank and the first rank of node 0 (the inter-node link), taken one
  node at a time so no two measurements share a link.
A node is named slow when a figure falls below `slow_fraction` of the median of that figure over the nodes.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from dist_vgg.launch import LaunchEnv


@dataclass(frozen=True)
class PreflightConfig:
    """What to measure and when to complain."""

    size_mb: float = 64.0
    """All-reduce / ping-pong message size in MiB (64 MiB is in the bandwidth-bound regime on NVLink and IB)."""
    iters: int = 5
    """Timed repetitions after one warm-up; the figure is their mean."""
    slow_fraction: float = 0.5
    """A node is slow when its figure is below this fraction of the median over all nodes."""
    min_gbps: float = 0.0
    """Fail the check when any node's figure is below this many GB/s (0: only report)."""

    def __post_init__(self) -> None:
        if self.size_mb <= 0 or self.iters < 1 or not 0 < self.slow_fraction <= 1 or self.min_gbps < 0:
            raise ValueError(
                f"need --size-mb > 0 (got {self.size_mb}), --iters >= 1 (got {self.iters}), "
                f"0 < --slow-fraction <= 1 (got {self.slow_fraction}), --min-gbps >= 0 (got {self.min_gbps})"
            )


@dataclass
class NodeFigures:
    """Measured figures of one node, GB/s (None: not measurable with this layout)."""

    node: str
    ranks: list[int]
    intra_gbps: float | None = None
    link_gbps: float | None = None


@dataclass
class PreflightReport:
    """Everything rank 0 prints; `slow` names the nodes below the thresholds with the reason."""

    world_size: int
    backend: str
    size_bytes: int
    allreduce_s: float
    bus_gbps: float
    nodes: list[NodeFigures]
    slow: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        mib = self.size_bytes / 2**20
        out = [
            f"preflight: {len(self.nodes)} nodes, {self.world_size} ranks, {self.backend}, {mib:g} MiB messages",
            f"preflight: world all-reduce {self.allreduce_s * 1e3:.2f} ms, bus bandwidth {self.bus_gbps:.3f} GB/s",
        ]
        for i, n in enumerate(self.nodes):
            intra = f"{n.intra_gbps:.3f} GB/s" if n.intra_gbps is not None else f"n/a ({len(n.ranks)} rank)"
            if i == 0:
                link = "reference node"
            else:
                link = f"{n.link_gbps:.3f} GB/s" if n.link_gbps is not None else "n/a"
            flag = f"  SLOW: {self.slow[n.node]}" if n.node in self.slow else ""
            out.append(
                f"preflight: node {n.node}: intra-node all-reduce {intra}, link to node 0 {link}{flag}"
            )
        if self.slow:
            out.append(
                f"preflight: SLOW NODE(S): {', '.join(sorted(self.slow))} — consider excluding with sbatch --exclude"
            )
        else:
            out.append("preflight: no slow node")
        return out


def find_slow(figures: dict[str, float], slow_fraction: float, min_gbps: float) -> dict[str, str]:
    """Nodes whose figure is below `slow_fraction` × median, or below `min_gbps`, with the reason."""
    if not figures:
        return {}
    median = statistics.median(figures.values())
    slow: dict[str, str] = {}
    for node, gbps in figures.items():
        if len(figures) > 1 and gbps < slow_fraction * median:
            slow[node] = f"{gbps:.3f} GB/s < {slow_fraction:.0%} of the median {median:.3f} GB/s"
        elif gbps < min_gbps:
            slow[node] = f"{gbps:.3f} GB/s < --min-gbps {min_gbps:g}"
    return slow


def _timed(fn: Callable[[], None], iters: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up: connection set-up and allocation are not bandwidth
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def measure(launch: LaunchEnv, device: torch.device, cfg: PreflightConfig) -> PreflightReport | None:
    """Run the check on every rank of an initialised process group; rank 0 gets the report, others None."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    numel = max(1, int(cfg.size_mb * 2**20) // 4)
    buf = torch.ones(numel, dtype=torch.float32, device=device)
    nbytes = numel * 4

    places: list[tuple[int, str] | None] = [None] * world
    dist.all_gather_object(places, (rank, launch.node_name))
    by_node: dict[str, list[int]] = {}
    for r, node in sorted(p for p in places if p is not None):
        by_node.setdefault(node, []).append(r)
    nodes = [NodeFigures(node, ranks) for node, ranks in sorted(by_node.items(), key=lambda kv: kv[1][0])]

    # 1. World all-reduce; bus bandwidth as nccl-tests defines it (2(n-1)/n of the data crosses each link).
    t_world = _timed(lambda: dist.all_reduce(buf), cfg.iters, sync)
    bus = 2 * (world - 1) / world * nbytes / t_world / 1e9 if world > 1 else 0.0

    # 2. Intra-node all-reduce, every node at once in its own group (every rank must create every group).
    intra_s = torch.zeros(len(nodes), dtype=torch.float64, device=device)
    for i, n in enumerate(nodes):
        group = dist.new_group(n.ranks) if len(n.ranks) > 1 else None
        if group is not None and rank in n.ranks:
            t = _timed(lambda g=group: dist.all_reduce(buf, group=g), cfg.iters, sync)
            if rank == n.ranks[0]:
                intra_s[i] = t
    dist.all_reduce(intra_s)

    # 3. Ping-pong node 0 ↔ node k between first ranks, one node at a time (no shared links).
    link_s = torch.zeros(len(nodes), dtype=torch.float64, device=device)
    leader0 = nodes[0].ranks[0]
    for i, n in enumerate(nodes[1:], start=1):
        peer = n.ranks[0]
        if rank == leader0:

            def pingpong(p: int = peer) -> None:
                dist.send(buf, p)
                dist.recv(buf, p)

            link_s[i] = _timed(pingpong, cfg.iters, sync)
        elif rank == peer:

            def pongping() -> None:
                dist.recv(buf, leader0)
                dist.send(buf, leader0)

            _timed(pongping, cfg.iters, sync)
        dist.barrier()
    dist.all_reduce(link_s)

    if rank != 0:
        return None
    for i, n in enumerate(nodes):
        if len(n.ranks) > 1 and intra_s[i] > 0:
            m = len(n.ranks)
            n.intra_gbps = 2 * (m - 1) / m * nbytes / float(intra_s[i]) / 1e9
        if i > 0 and link_s[i] > 0:
            n.link_gbps = 2 * nbytes / float(link_s[i]) / 1e9
    report = PreflightReport(world, dist.get_backend(), nbytes, t_world, bus, nodes)
    for figures in (
        {n.node: n.intra_gbps for n in nodes if n.intra_gbps is not None},
        {n.node: n.link_gbps for n in nodes if n.link_gbps is not None},
    ):
        for node, why in find_slow(figures, cfg.slow_fraction, cfg.min_gbps).items():
            report.slow.setdefault(node, why)
    return report


def dump_flight_recorder(rank: int, env: dict[str, str] | None = None) -> Path | None:
    """Write this rank's flight-recorder buffer (its last collectives: op, sizes, sequence number, state) to
    `$TORCH_FR_DUMP_TEMP_FILE<rank>`, as NCCL's watchdog does by itself on a timeout. Gloo records into the same
    buffer when TORCH_FR_BUFFER_SIZE > 0 but never dumps it: call this where a collective failed or timed out.
    Returns the file written, or None when no destination is configured or the buffer is unavailable."""
    env = dict(os.environ) if env is None else env
    prefix = env.get("TORCH_FR_DUMP_TEMP_FILE")
    if not prefix:
        return None
    try:
        from torch._C._distributed_c10d import _dump_fr_trace

        data = _dump_fr_trace()
    except (ImportError, RuntimeError):
        return None
    path = Path(f"{prefix}{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
