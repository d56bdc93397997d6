"""Cluster scaling model for VGG data-parallel training: step time and scaling efficiency on N nodes × G GPUs.

Inputs are physical: the single-GPU step time (measured, or estimated from the matmul rate), the exact gradient
bytes of each layer (from `dist_vgg.models.geometry`), the interconnect (NVLink inside a node, one NIC per GPU
between nodes), the all-reduce algorithm (flat ring, or hierarchical: reduce-scatter in the node, all-reduce
between nodes, all-gather in the node) and the gradient-communication options of `dist_vgg.train.comm`
(bucket size, bf16 compression) or ZeRO-1/2.

Overlap is simulated, not assumed: the backward pass runs layer by layer from FC-8 down to conv1_1, each layer
taking a share of the backward time proportional to its multiply-adds; DDP groups gradients into buckets in that
order; each bucket's all-reduce starts once its last gradient is ready and the previous all-reduce has finished.
VGG's shape makes this matter: FC-6 holds ~74 % of the gradient bytes but under 1 % of the FLOPs, and its
gradient is ready ~1 % into the backward pass, so its all-reduce can hide behind the convolutions' backward.

Both regimes are reported:
- the paper's fixed global batch of 256 (strong scaling: 16 images per GPU on 2 × 8 GPUs);
- large batches (weak scaling: fixed per-GPU batch, global batch grows with the GPU count).

The CPU sanity check (`--cpu-check`) measures, on this machine, a 1-rank step (1 thread) of a small VGG, the
loopback gloo all-reduce fit (`bench/allreduce.py`) and a real 2-rank DDP step, and compares the measured 2-rank
step with what the same model predicts from the first two.

    .venv/bin/python bench/scaling_model.py                      # GPU cluster table + CPU check
    .venv/bin/python bench/scaling_model.py --step-ms 46.5 --step-batch 256   # a measured H100 step
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_vgg.models.geometry import layers  # noqa: E402
from dist_vgg.models.vgg import VGGSpec  # noqa: E402

H100_BF16_MATMUL_FLOPS = 790e12
"""Measured dense bf16 matmul rate of one H100 SXM (the issue's figure)."""
MFU_GOAL = 0.65
"""Fraction of that rate the single-GPU goal assumes (VGG-16 ≥ 5,500 img/s)."""
TRAIN_FLOPS_PER_MAC = 6
"""Training = forward (2 FLOP per multiply-add) + backward (2 × forward): 92.8 GFLOP per VGG-16 image at 224²."""
GPU_SECTION_BEGIN = "<!-- GPU-SECTION-BEGIN"
GPU_SECTION_END = "<!-- GPU-SECTION-END -->"


# ---------------------------------------------------------------------------------------------------------------
# The workload: gradient bytes and backward cost per layer, in the order the backward pass produces them.


@dataclass(frozen=True)
class GradLayer:
    key: str
    params: int
    backward_share: float
    """Fraction of the backward pass this layer's backward takes (∝ its multiply-adds)."""


def backward_order(spec: VGGSpec) -> list[GradLayer]:
    """The weight layers of `spec` from FC-8 down to the first conv, with their parameters and backward shares."""
    info = layers(spec)
    total = sum(layer.macs for layer in info)
    return [GradLayer(layer.key, layer.params, layer.macs / total) for layer in reversed(info)]


@dataclass(frozen=True)
class Workload:
    """What one GPU does per step at per-GPU batch `batch`."""

    layers: tuple[GradLayer, ...]
    seconds_per_image: float
    """Forward + backward compute per image on one GPU (optimizer excluded)."""
    optimizer_s: float
    """SGD-with-momentum update of all parameters on one GPU (memory-bound)."""
    forward_share: float = 1 / 3
    """Forward share of the compute; backward (input and weight gradients) is the other 2/3."""

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def compute_s(self, batch: int) -> float:
        return batch * self.seconds_per_image

    def single_step_s(self, batch: int) -> float:
        return self.compute_s(batch) + self.optimizer_s


# ---------------------------------------------------------------------------------------------------------------
# The machine and the collectives.


@dataclass(frozen=True)
class Cluster:
    """N nodes × G GPUs. Bandwidths are achievable collective bus bandwidths per GPU, not marketing peaks."""

    nodes: int = 2
    gpus_per_node: int = 8
    intra_bytes_per_s: float = 360e9
    """NVLink 4 (H100 SXM, 450 GB/s per direction): NCCL all-reduce bus bandwidth ~360 GB/s inside a node."""
    inter_bytes_per_s: float = 400e9 / 8 * 0.9
    """One 400 Gb/s NIC per GPU at 90 % of line rate (45 GB/s)."""
    intra_latency_s: float = 1.5e-6
    """Per ring step inside a node."""
    inter_latency_s: float = 5e-6
    """Per ring step of a ring that crosses the network (a small 2 × 8 all-reduce then costs ~150 µs: on the
    pessimistic side of what nccl-tests report, so small buckets are not flattered)."""
    hbm_bytes_per_s: float = 3.35e12
    """H100 SXM memory bandwidth: prices the optimizer update and the bf16 casts."""
    overlap_slowdown: float = 0.05
    """Backward compute runs this much slower while a collective is in flight (NCCL kernels take SMs and HBM)."""

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def ring_allreduce_s(nbytes: float, n: int, bw: float, alpha: float) -> float:
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * alpha


def ring_half_s(nbytes: float, n: int, bw: float, alpha: float) -> float:
    """Reduce-scatter or all-gather of `nbytes` over n ranks: half of a ring all-reduce."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / bw + (n - 1) * alpha


def _ring_s(nbytes_per_rank_sent: float, c: Cluster, steps: int) -> float:
    """A ring over all GPUs, as NCCL runs it: several channels (rings), rotated so that each GPU's NIC carries one
    of them; per GPU, 1/G of what it sends crosses the network, the rest goes over NVLink, and the slower of the two
    paths sets the pace. `nbytes_per_rank_sent` is 2(p−1)/p·B for an all-reduce, (p−1)/p·B for half of one."""
    if c.nodes == 1:
        return nbytes_per_rank_sent / c.intra_bytes_per_s + steps * c.intra_latency_s
    g = c.gpus_per_node
    per_byte = max((g - 1) / g / c.intra_bytes_per_s, 1 / g / c.inter_bytes_per_s)
    return nbytes_per_rank_sent * per_byte + steps * c.inter_latency_s


def allreduce_s(nbytes: float, c: Cluster, algorithm: str) -> float:
    p = c.gpus
    if p <= 1:
        return 0.0
    if algorithm == "ring":
        return _ring_s(2 * (p - 1) / p * nbytes, c, 2 * (p - 1))
    if algorithm == "hierarchical":
        g = c.gpus_per_node
        return 2 * ring_half_s(nbytes, g, c.intra_bytes_per_s, c.intra_latency_s) + ring_allreduce_s(
            nbytes / g, c.nodes, c.inter_bytes_per_s, c.inter_latency_s
        )
    raise ValueError(f"algorithm must be ring or hierarchical (got {algorithm!r})")


def half_collective_s(nbytes: float, c: Cluster, algorithm: str) -> float:
    """Reduce-scatter (or all-gather) of `nbytes` over all GPUs."""
    p = c.gpus
    if p <= 1:
        return 0.0
    if algorithm == "ring":
        return _ring_s((p - 1) / p * nbytes, c, p - 1)
    g = c.gpus_per_node
    return ring_half_s(nbytes, g, c.intra_bytes_per_s, c.intra_latency_s) + ring_half_s(
        nbytes / g, c.nodes, c.inter_bytes_per_s, c.inter_latency_s
    )


# ---------------------------------------------------------------------------------------------------------------
# The communication options and the step simulation.


@dataclass(frozen=True)
class CommOptions:
    algorithm: str = "ring"
    """ring (NCCL's choice for large messages: one ring over all GPUs, one channel per NIC) | hierarchical
    (reduce-scatter in the node, all-reduce between nodes, all-gather in the node, one after the other)."""
    overlap: bool = True
    """Bucketed all-reduce during backward (DDP) or one all-reduce after backward."""
    bucket_cap_mb: float = 25.0
    """DDP bucket size (dist_vgg.train.comm.CommConfig.bucket_cap_mb)."""
    compress: str = "none"
    """none | bf16: gradient bytes on the wire (dist_vgg.train.comm.CommConfig.compress)."""
    zero: int = 0
    """0: DDP all-reduce; 1: reduce-scatter after backward + all-gather of parameters; 2: reduce-scatter in
    buckets during backward + all-gather of parameters. The optimizer update shrinks to 1/N of the parameters."""

    def describe(self) -> str:
        parts = [self.algorithm, "overlap" if self.overlap else "no-overlap"]
        if self.overlap:
            parts.append(f"bucket={self.bucket_cap_mb:g}MB")
        parts.append(f"grad={'bf16' if self.compress == 'bf16' else 'fp32'}")
        if self.zero:
            parts.append(f"ZeRO-{self.zero}")
        return " ".join(parts)


def buckets(work: Workload, cap_bytes: float, bytes_per_param: int) -> list[tuple[float, float]]:
    """DDP's bucketing in backward order: (bytes, ready time as a fraction of the backward pass) per bucket.
    Like DDP's `compute_bucket_assignment_by_size`, a bucket takes gradients until it reaches the cap, so a layer
    bigger than the cap (FC-6) closes the bucket it lands in."""
    out: list[tuple[float, float]] = []
    done, cur_bytes = 0.0, 0.0
    for layer in work.layers:
        done += layer.backward_share
        cur_bytes += layer.params * bytes_per_param
        if cur_bytes >= cap_bytes:
            out.append((cur_bytes, done))
            cur_bytes = 0.0
    if cur_bytes:
        out.append((cur_bytes, done))
    return out


@dataclass(frozen=True)
class StepPrediction:
    step_s: float
    compute_s: float
    comm_s: float
    """Total time the collectives take (overlapped or not)."""
    exposed_comm_s: float
    """What the collectives add to the step beyond compute and optimizer."""


def predict_step(work: Workload, c: Cluster, opts: CommOptions, batch: int) -> StepPrediction:
    """Step time on every GPU of `c` at per-GPU batch `batch`."""
    fwd = work.compute_s(batch) * work.forward_share
    bwd = work.compute_s(batch) - fwd
    grad_bytes = 2 if opts.compress == "bf16" else 4
    optimizer = work.optimizer_s / (c.gpus if opts.zero else 1)
    if c.gpus == 1:
        return StepPrediction(work.single_step_s(batch), work.compute_s(batch), 0.0, 0.0)
    # Casting fp32 → bf16 and back: read 4 + write 2, read 2 + write 4 bytes per parameter on the GPU.
    cast_s = (12 * work.params / c.hbm_bytes_per_s) if opts.compress == "bf16" else 0.0
    param_gather_s = half_collective_s(4 * work.params, c, opts.algorithm) if opts.zero else 0.0

    def coll(nbytes: float) -> float:
        if opts.zero:
            return half_collective_s(nbytes, c, opts.algorithm)
        return allreduce_s(nbytes, c, opts.algorithm)

    if not opts.overlap or opts.zero == 1:
        comm = coll(grad_bytes * work.params) + cast_s
        step = fwd + bwd + comm + optimizer + param_gather_s
        return StepPrediction(step, fwd + bwd, comm + param_gather_s, comm + param_gather_s)

    end_comm, busy_during_bwd, comm_total = 0.0, 0.0, 0.0
    # DDP sizes buckets by the fp32 gradients they hold; a compression hook then shrinks what goes on the wire.
    for fp32_bytes, ready in buckets(work, opts.bucket_cap_mb * 2**20, 4):
        t = coll(fp32_bytes * grad_bytes / 4) + cast_s * fp32_bytes / (4 * work.params)
        start = max(fwd + ready * bwd, end_comm)
        end_comm = start + t
        comm_total += t
        busy_during_bwd += max(0.0, min(end_comm, fwd + bwd) - start)
    bwd_end = fwd + bwd + c.overlap_slowdown * busy_during_bwd
    step = max(bwd_end, end_comm) + optimizer + param_gather_s
    exposed = step - (fwd + bwd) - optimizer
    return StepPrediction(step, fwd + bwd, comm_total + param_gather_s, exposed)


def weak_efficiency(work: Workload, c: Cluster, opts: CommOptions, batch: int) -> float:
    """Per-GPU throughput on the cluster / on one GPU, at the same per-GPU batch."""
    return work.single_step_s(batch) / predict_step(work, c, opts, batch).step_s


def strong_efficiency(work: Workload, c: Cluster, opts: CommOptions, global_batch: int) -> float:
    """Speed-up over one GPU running the whole global batch, divided by the GPU count."""
    per_gpu = global_batch // c.gpus
    return work.single_step_s(global_batch) / predict_step(work, c, opts, per_gpu).step_s / c.gpus


# ---------------------------------------------------------------------------------------------------------------
# Where the single-GPU step comes from.


def gpu_section_step(results_md: Path) -> tuple[float, int, str] | None:
    """A measured VGG-16 single-GPU training rate from RESULTS.md's hand-kept GPU section, if one is recorded:
    a line `RESULT <name containing vgg16> <value> img/s ...` (the first such line; training throughput) and the
    card named on a `card:` line."""
    if not results_md.exists():
        return None
    text = results_md.read_text()
    if GPU_SECTION_BEGIN not in text:
        return None
    section = text.split(GPU_SECTION_BEGIN, 1)[1].split(GPU_SECTION_END, 1)[0]
    m = re.search(r"RESULT\s+\S*vgg16\S*\s+([0-9.]+)\s+img/s", section)
    if not m:
        return None
    card = re.search(r"card:\s*(.+)", section)
    rate = float(m.group(1))
    return 1.0 / rate, 0, (card.group(1).strip() if card else "unnamed GPU")


def gpu_workload(seconds_per_image: float, spec: VGGSpec, hbm_bytes_per_s: float) -> Workload:
    order = backward_order(spec)
    params = sum(layer.params for layer in order)
    # fp32 SGD with momentum: read param, grad, momentum; write param, momentum = 5 × 4 bytes per parameter.
    return Workload(tuple(order), seconds_per_image, 20 * params / hbm_bytes_per_s)


def estimated_seconds_per_image(spec: VGGSpec) -> float:
    flops = TRAIN_FLOPS_PER_MAC * sum(layer.macs for layer in layers(spec))
    return flops / (H100_BF16_MATMUL_FLOPS * MFU_GOAL)


# ---------------------------------------------------------------------------------------------------------------
# Reports.


def cluster_report(work: Workload, c: Cluster, source: str) -> dict[str, float]:
    """Print the strong- and weak-scaling tables; return the headline figures."""
    gb = work.params * 4 / 1e9
    fc6 = next(layer for layer in work.layers if layer.key == "classifier.0")
    print(
        f"single-GPU compute: {work.seconds_per_image * 1e3:.4f} ms/image ({1 / work.seconds_per_image:,.0f} img/s) — {source}"
    )
    print(
        f"gradient: {work.params:,} params = {gb:.3f} GB fp32; FC-6 {fc6.params / work.params:.1%} of it, "
        f"{fc6.backward_share:.2%} of the backward FLOPs, ready after "
        f"{sum(la.backward_share for la in work.layers[:3]):.2%} of the backward pass"
    )
    print(
        f"cluster: {c.nodes} × {c.gpus_per_node} GPUs, NVLink {c.intra_bytes_per_s / 1e9:.0f} GB/s, "
        f"network {c.inter_bytes_per_s * 8 / 1e9:.0f} Gb/s per GPU (achievable), optimizer {work.optimizer_s * 1e3:.2f} ms"
    )
    variants = [
        CommOptions("ring", overlap=False),
        CommOptions("hierarchical", overlap=False),
        CommOptions("ring", overlap=False, compress="bf16"),
        CommOptions("ring", overlap=True, bucket_cap_mb=25),
        CommOptions("hierarchical", overlap=True, bucket_cap_mb=25),
        CommOptions("ring", overlap=True, bucket_cap_mb=25, compress="bf16"),
        CommOptions("ring", overlap=True, bucket_cap_mb=100, compress="bf16"),
        CommOptions("ring", overlap=True, bucket_cap_mb=5, compress="bf16"),
        CommOptions("ring", overlap=False, zero=1),
        CommOptions("ring", overlap=True, bucket_cap_mb=25, zero=2),
        CommOptions("ring", overlap=True, bucket_cap_mb=25, compress="bf16", zero=2),
    ]
    batches = (16, 32, 64, 128, 256)
    print("\nstrong scaling, the paper's global batch 256 (16 images per GPU):")
    print(f"  {'options':52s} {'step ms':>8s} {'exposed comm ms':>16s} {'speed-up':>9s} {'eff':>6s}")
    for o in variants:
        p = predict_step(work, c, o, 256 // c.gpus)
        eff = strong_efficiency(work, c, o, 256)
        print(
            f"  {o.describe():52s} {p.step_s * 1e3:8.2f} {p.exposed_comm_s * 1e3:16.2f} {eff * c.gpus:9.2f} {eff:6.1%}"
        )
    print("\nweak scaling (per-GPU batch fixed, global batch = per-GPU × GPUs); efficiency vs one GPU:")
    print(f"  {'options':52s} " + " ".join(f"{f'b={b}':>7s}" for b in batches))
    for o in variants:
        effs = [weak_efficiency(work, c, o, b) for b in batches]
        print(f"  {o.describe():52s} " + " ".join(f"{e:7.1%}" for e in effs))

    best = recommend(work, c)
    print(
        f"\nrecommended large-batch configuration (smallest per-GPU batch predicted ≥ 95 %, and still ≥ 95 % at "
        f"half the assumed NVLink and network bandwidth): per-GPU batch "
        f"{best[0]} (global {best[0] * c.gpus}), {best[1].describe()}: {best[2]:.1%}"
    )
    strong_default = strong_efficiency(work, c, CommOptions(), 256)
    strong_best = max(strong_efficiency(work, c, o, 256) for o in variants)
    return {
        "strong_fp32_overlap": strong_default,
        "strong_best": strong_best,
        "recommended_batch": best[0],
        "recommended_bucket": best[1].bucket_cap_mb,
        "recommended_eff": best[2],
        "recommended_compress": 1.0 if best[1].compress == "bf16" else 0.0,
    }


def recommend(work: Workload, c: Cluster) -> tuple[int, CommOptions, float]:
    """Smallest per-GPU batch predicted at ≥ 95 % that *stays* ≥ 95 % with both links at half the assumed
    bandwidth (the model's bandwidths are typical figures, not this cluster's measurement); among those, fp32
    before bf16 (exact averaging when it is free), then the bucket size with the highest efficiency."""
    slow = replace(c, intra_bytes_per_s=c.intra_bytes_per_s / 2, inter_bytes_per_s=c.inter_bytes_per_s / 2)
    for b in (16, 32, 48, 64, 96, 128, 192, 256):
        for compress in ("none", "bf16"):
            ok = []
            for cap in (5.0, 10.0, 25.0, 50.0, 100.0):
                o = CommOptions("ring", overlap=True, bucket_cap_mb=cap, compress=compress)
                if weak_efficiency(work, slow, o, b) >= 0.95:
                    ok.append((weak_efficiency(work, c, o, b), -abs(cap - 25), o))
            if ok:
                eff, _, o = max(ok, key=lambda t: (round(t[0], 3), t[1]))
                return b, o, eff
    o = CommOptions("ring", overlap=True, bucket_cap_mb=25, compress="bf16")
    return 256, o, weak_efficiency(work, c, o, 256)


# ---------------------------------------------------------------------------------------------------------------
# CPU sanity check: the model's form against a real 2-rank gloo DDP step on this machine.

CPU_SPEC = VGGSpec("D", num_classes=100, width=0.5, crop=32, dropout=0.0)
"""Big FC layers for its compute, so that communication is a sizeable part of the 2-rank step."""
CPU_BATCH = 8
"""Images per rank."""


def _cpu_setup(batch: int, ddp: bool, bucket_cap_mb: float):
    import torch
    from torch import nn

    from dist_vgg.models import build_vgg
    from dist_vgg.train.comm import CommConfig, wrap_ddp

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model: nn.Module = build_vgg(**CPU_SPEC.to_dict())
    if ddp:
        model = wrap_ddp(model, CommConfig(bucket_cap_mb=bucket_cap_mb))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, CPU_SPEC.crop, CPU_SPEC.crop)
    y = torch.randint(0, CPU_SPEC.num_classes, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def _timed(step, n: int, sync: bool) -> list[float]:
    import torch

    out = []
    for _ in range(n):
        if sync:
            torch.distributed.barrier()
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def _cpu_rounds(rank: int, batch: int, steps: int, rounds: int, bucket_cap_mb: float) -> dict[str, list]:
    """Both ranks, in alternating rounds so that the other users of this machine load every figure alike:
    (1) a plain 1-thread step with no communication while the other rank does the same (the compute each rank
    gets when two ranks share two cores), (2) the DDP step, (3) all-reduces for the loopback fit."""
    import allreduce

    local = _cpu_setup(batch, False, bucket_cap_mb)
    ddp = _cpu_setup(batch, True, bucket_cap_mb)
    local()
    ddp()
    ddp()  # DDP regroups its buckets after the first step
    res: dict[str, list] = {"local": [], "ddp": [], "allreduce": []}
    for _ in range(rounds):
        res["local"] += _timed(local, steps, sync=True)
        res["ddp"] += _timed(ddp, steps, sync=True)
        res["allreduce"] += allreduce._time_allreduce(rank, (1.0, 8.0, 32.0), 2)
    return res


def _alone(batch: int, steps: int) -> float:
    step = _cpu_setup(batch, False, 25.0)
    step()
    return statistics.median(_timed(step, steps, sync=False))


def cpu_check(steps: int = 2, rounds: int = 8) -> dict[str, float]:
    """Measure the model's inputs and the 2-rank step; return measured, predicted and the relative error."""
    import allreduce
    import torch

    bucket = 25.0
    alone = _alone(CPU_BATCH, steps)
    r = allreduce.run_two_ranks(_cpu_rounds, CPU_BATCH, steps, rounds, bucket)
    shared = statistics.median(r["local"])
    two_rank = statistics.median(r["ddp"])
    by_size: dict[int, list[float]] = {}
    for nbytes, secs in r["allreduce"]:
        by_size.setdefault(nbytes, []).append(secs)
    ar = allreduce.fit([(b, statistics.median(ts)) for b, ts in sorted(by_size.items())])
    order = backward_order(CPU_SPEC)
    # The measured plain step already holds the optimizer update.
    work = Workload(tuple(order), shared / CPU_BATCH, 0.0)
    loopback = Cluster(
        nodes=1,
        gpus_per_node=2,
        intra_bytes_per_s=ar.bus_bytes_per_s,
        intra_latency_s=ar.latency_s / 2,  # a 2-rank ring has 2 steps: α per step = fitted latency / 2
        overlap_slowdown=0.0,
    )
    # Each rank's compute has one core, and gloo's communication thread competes with it for that same core (no
    # separate engine, unlike NVLink/NICs + a few SMs on a GPU): communication cannot hide behind backward here,
    # so the physically right form is the no-overlap one. The overlapped figure is printed for comparison.
    serial = predict_step(work, loopback, CommOptions("ring", overlap=False), CPU_BATCH).step_s
    overlapped = predict_step(
        work, loopback, CommOptions("ring", overlap=True, bucket_cap_mb=bucket), CPU_BATCH
    ).step_s
    params = sum(layer.params for layer in order)
    print(
        f"\nCPU check ({CPU_SPEC.config} width {CPU_SPEC.width:g} crop {CPU_SPEC.crop}, {params:,} params = "
        f"{params * 4 / 2**20:.1f} MiB fp32, batch {CPU_BATCH}/rank, 1 thread/rank, torch {torch.__version__}; "
        f"medians of {rounds} interleaved rounds × {steps} steps):"
    )
    print(f"  1 rank alone (measured, information):        {alone * 1e3:8.1f} ms")
    print(f"  1 rank while the other rank computes (meas.): {shared * 1e3:8.1f} ms   ← model input")
    print(
        f"  loopback all-reduce fit (measured):           latency {ar.latency_s * 1e3:.2f} ms, "
        f"{ar.bus_bytes_per_s / 1e9:.2f} GB/s → {ar.time(params * 4) * 1e3:.1f} ms for the gradient   ← model input"
    )
    print(f"  2 ranks DDP, gloo loopback (measured):        {two_rank * 1e3:8.1f} ms")
    print(f"  model, no overlap (cores shared):             {serial * 1e3:8.1f} ms")
    print(f"  model, overlap (what a GPU could hide):       {overlapped * 1e3:8.1f} ms")
    return {"measured": two_rank, "predicted": serial, "error": abs(serial - two_rank) / two_rank}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-ms", type=float, help="measured single-GPU VGG-16 training step, milliseconds")
    ap.add_argument("--step-batch", type=int, help="the per-GPU batch of --step-ms")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--inter-gbps", type=float, default=400.0, help="network line rate per GPU, Gb/s")
    ap.add_argument("--intra-gbs", type=float, default=360.0, help="NVLink all-reduce bus bandwidth, GB/s")
    ap.add_argument("--config", default="D", help="VGG configuration (Table 1 name)")
    ap.add_argument("--no-cpu-check", action="store_true", help="skip the 2-rank gloo measurement")
    args = ap.parse_args(argv)
    if (args.step_ms is None) != (args.step_batch is None):
        ap.error("--step-ms and --step-batch go together (a step time means nothing without its batch)")

    spec = VGGSpec(args.config)
    cluster = Cluster(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        intra_bytes_per_s=args.intra_gbs * 1e9,
        inter_bytes_per_s=args.inter_gbps * 1e9 / 8 * 0.9,
    )
    from_md = gpu_section_step(Path(__file__).resolve().parent / "RESULTS.md")
    if args.step_ms is not None:
        per_image = args.step_ms / 1e3 / args.step_batch
        source = f"measured: {args.step_ms} ms at batch {args.step_batch} (--step-ms)"
    elif from_md is not None and args.config == "D":
        per_image = from_md[0]
        source = f"measured on {from_md[2]} (bench/RESULTS.md GPU section)"
    else:
        per_image = estimated_seconds_per_image(spec)
        source = (
            f"ESTIMATE: {TRAIN_FLOPS_PER_MAC * sum(la.macs for la in layers(spec)) / 1e9:.1f} GFLOP/image at "
            f"{MFU_GOAL:.0%} of {H100_BF16_MATMUL_FLOPS / 1e12:.0f} TFLOP/s (H100 bf16), not a measurement"
        )
    work = gpu_workload(per_image, spec, cluster.hbm_bytes_per_s)
    head = cluster_report(work, cluster, source)
    tag = f"{cluster.nodes}x{cluster.gpus_per_node}"
    print(
        f"RESULT scaling_model_{tag}_strong256_fp32_overlap {head['strong_fp32_overlap']:.3f} efficiency ratio=n/a"
    )
    print(f"RESULT scaling_model_{tag}_strong256_best {head['strong_best']:.3f} efficiency ratio=n/a")
    print(
        f"RESULT scaling_model_{tag}_largebatch_b{head['recommended_batch']}_"
        f"{'bf16' if head['recommended_compress'] else 'fp32'}_bucket{head['recommended_bucket']:g} "
        f"{head['recommended_eff']:.3f} efficiency ratio={head['recommended_eff'] / 0.95:.3f}"
    )
    if not args.no_cpu_check:
        chk = cpu_check()
        print(f"RESULT scaling_model_cpu_2rank_measured {chk['measured'] * 1e3:.1f} ms ratio=n/a")
        print(f"RESULT scaling_model_cpu_2rank_predicted {chk['predicted'] * 1e3:.1f} ms ratio=n/a")
        print(
            f"RESULT scaling_model_cpu_2rank_error {chk['error']:.3f} fraction ratio={chk['error'] / 0.25:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
