"""What A-LRN's local response normalisation costs over configuration A: step time and activation memory.

The paper (section 4.1) found LRN brings no accuracy but costs memory and time. Here both are measured on the
same machine in the same run:
- step time: forward + backward + SGD step of A and A-LRN at a narrow width, interleaved step by step (median
  of each). On a CPU the step runs on 1 thread and is timed in that thread's CPU seconds, which other processes
  time-sharing the core do not inflate; on a GPU it is wall time between synchronisations. At a narrow width the
  convs shrink with width² and the LRN only with width, so the time ratio overstates LRN's share at width 1;
- activation memory: the bytes autograd saves for backward in one forward pass (counted exactly through
  `torch.autograd.graph.saved_tensors_hooks`, each storage once), at the bench size and at the paper's size
  (width 1, 224², per image); on a GPU also the peak allocated memory of one step.

Reference: configuration A itself (ratio = A-LRN / A).

    .venv/bin/python bench/lrn_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_vgg.models import VGGSpec, build_vgg
from dist_vgg.models.geometry import forward_macs
from dist_vgg.models.vgg import _alexnet_lrn


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct tensors autograd keeps for backward during one forward pass of `model` on `x`
    (parameters excluded: they exist whether or not a batch is in flight)."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def step_times(
    spec_a: VGGSpec, spec_lrn: VGGSpec, batch: int, steps: int, device: str
) -> tuple[float, float]:
    """Median training-step seconds of A and A-LRN, interleaved."""
    models, opts = [], []
    for spec in (spec_a, spec_lrn):
        torch.manual_seed(0)
        m = build_vgg(**spec.to_dict()).to(device)
        models.append(m)
        opts.append(torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9))
    x = torch.randn(batch, 3, spec_a.crop, spec_a.crop, device=device)
    y = torch.randint(0, spec_a.num_classes, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    clock = time.perf_counter if device == "cuda" else time.thread_time
    times: list[list[float]] = [[], []]
    for i in range(steps + 1):
        for k, (m, opt) in enumerate(zip(models, opts)):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            opt.zero_grad(set_to_none=False)
            loss_fn(m(x), y).backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms both up
                times[k].append(clock() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def lrn_alone_s(device: str, steps: int) -> float:
    """Forward + backward of the LRN layer alone on one paper-size image's conv1 output (64 × 224 × 224)."""
    lrn = _alexnet_lrn()
    x = torch.rand(1, 64, 224, 224, device=device, requires_grad=True)
    clock = time.perf_counter if device == "cuda" else time.thread_time
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        lrn(x).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(clock() - t0)
    return statistics.median(times)


def cuda_peak_bytes(spec: VGGSpec, batch: int) -> int:
    """Peak memory allocated during one training step on the GPU, above what the model and optimizer hold."""
    torch.manual_seed(0)
    m = build_vgg(**spec.to_dict()).cuda()
    x = torch.randn(batch, 3, spec.crop, spec.crop, device="cuda")
    y = torch.randint(0, spec.num_classes, (batch,), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    nn.functional.cross_entropy(m(x), y).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25, help="width multiplier of the timed networks")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median taken)")
    ap.add_argument("--no-full-size", action="store_true", help="skip the width-1 224² activation count")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)  # one thread: its CPU time is the step's cost on one core
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU, 1 thread, CPU-seconds of that thread"

    spec_a = VGGSpec("A", num_classes=100, width=args.width, crop=args.crop, dropout=0.0)
    spec_l = VGGSpec("A-LRN", num_classes=100, width=args.width, crop=args.crop, dropout=0.0)
    t_a, t_l = step_times(spec_a, spec_l, args.batch, args.steps, device)
    x = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    mem = []
    for spec in (spec_a, spec_l):
        torch.manual_seed(0)
        mem.append(saved_activation_bytes(build_vgg(**spec.to_dict()).to(device), x))
    print(f"{where}, torch {torch.__version__}; width {args.width:g}, crop {args.crop}, batch {args.batch}:")
    print(f"  step time  A {t_a * 1e3:8.1f} ms   A-LRN {t_l * 1e3:8.1f} ms   (+{t_l / t_a - 1:.1%})")
    print(
        f"  saved activations  A {mem[0] / 2**20:8.1f} MiB   A-LRN {mem[1] / 2**20:8.1f} MiB   "
        f"(+{mem[1] / mem[0] - 1:.1%})"
    )
    if device == "cuda":
        peak = [cuda_peak_bytes(s, args.batch) for s in (spec_a, spec_l)]
        print(f"  CUDA peak of one step  A {peak[0] / 2**20:.1f} MiB   A-LRN {peak[1] / 2**20:.1f} MiB")
        print(f"RESULT lrn_cuda_peak_memory {peak[1] / 2**20:.1f} MiB ratio={peak[1] / peak[0]:.3f}")
    if not args.no_full_size:
        # The paper's network at 224², one image: the count needs one forward pass, no training step.
        full = []
        x1 = torch.randn(1, 3, 224, 224, device=device)
        for name in ("A", "A-LRN"):
            torch.manual_seed(0)
            with torch.device(device):
                m = build_vgg(name, num_classes=1000, dropout=0.0)
            full.append(saved_activation_bytes(m, x1))
            del m
        print(
            f"  paper size (width 1, 224², per image): A {full[0] / 2**20:.1f} MiB, A-LRN {full[1] / 2**20:.1f} MiB "
            f"saved for backward (+{full[1] / full[0] - 1:.1%}; ×256 images: +{(full[1] - full[0]) * 256 / 2**30:.1f} GiB)"
        )
        # A's paper-size step per image, scaled from the measured bench step by multiply-adds (an estimate:
        # wide convs run at a higher rate than narrow ones, so this leans towards understating A's speed and
        # so towards understating LRN's share).
        t_lrn = lrn_alone_s(device, 3)
        a_full = t_a / args.batch * forward_macs(VGGSpec("A")) / forward_macs(spec_a)
        print(
            f"  paper size, per image: LRN forward+backward {t_lrn * 1e3:.0f} ms vs A's step ≈ {a_full * 1e3:.0f} ms "
            f"(A scaled from the bench step by multiply-adds): LRN adds ≈ {t_lrn / a_full:.0%}"
        )
        print(
            f"RESULT lrn_time_share_224_estimate {t_lrn / a_full:.3f} fraction ratio={1 + t_lrn / a_full:.3f}"
        )
        print(
            f"RESULT lrn_activation_bytes_per_image_224 {full[1] / 2**20:.1f} MiB ratio={full[1] / full[0]:.3f}"
        )
    print(f"RESULT lrn_saved_activations {mem[1] / 2**20:.1f} MiB ratio={mem[1] / mem[0]:.3f}")
    print(f"RESULT lrn_step_time {t_l * 1e3:.1f} ms ratio={t_l / t_a:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
