"""Every GPU check of the trainer in one run (bench/gpu_check.sh calls this): needs only a CUDA build of PyTorch.

1. bf16 matmul rate (the card's measured ceiling for the TFLOP/s figures below)
2. VGG-16 (D) and VGG-19 (E) training steps on synthetic on-GPU data, batch 64 and 128, bf16 autocast,
   channels-last, eager and torch.compile: images/s, achieved TFLOP/s, share of the matmul rate, peak memory
3. a one-rank NCCL process group (all-reduce)
4. a 20-step real training of the tiny recipe through the CLI on the GPU (DDP engine, synthetic data)
5. the same with the DeepSpeed engine, when DeepSpeed is importable (else skipped with a message)

A short table is printed last, then a RESULT line. `--dry-run` runs every check on the CPU with tiny sizes
(fp32, gloo instead of NCCL) so the script itself is testable without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dist_vgg.models import build_vgg, initialise  # noqa: E402


@dataclass
class Row:
    check: str
    result: str
    detail: str = ""


ROWS: list[Row] = []


def say(msg: str) -> None:
    print(msg, flush=True)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_macs(model: torch.nn.Module, crop: int, device: torch.device) -> int:
    """Multiply-adds of one image's forward pass, counted from the layers (convs and linears)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, crop, crop, device=device))
    for h in hooks:
        h.remove()
    return total


def vgg_steps(config: str, batch: int, compiled: bool, args, device, dtype, peak: float) -> None:
    name = f"VGG-{16 if config == 'D' else 19} b{batch} {'compile' if compiled else 'eager'}"
    torch.manual_seed(0)
    model = build_vgg(config, args.classes, args.width, args.crop).to(device)
    initialise(model, "glorot")
    model.to(memory_format=torch.channels_last)
    macs = forward_macs(model, args.crop, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    fwd = torch.compile(model) if compiled else model
    x = (torch.randn(batch, 3, args.crop, args.crop, device=device) * 50).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, args.classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(fwd(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / args.iters
    ips = batch / dt
    tflops = 3 * 2 * macs * ips / 1e12  # training ≈ 3 × forward
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    ROWS.append(
        Row(
            name,
            f"{ips:,.0f} img/s",
            f"{tflops:.1f} TFLOP/s = {100 * tflops / peak:.0f}% of matmul; "
            f"peak mem {mem:.1f} GiB; warm-up {warm:.1f}s",
        )
    )
    say(f"{name}: {ips:.1f} img/s, {tflops:.2f} TFLOP/s, peak memory {mem:.2f} GiB")
    if device.type == "cuda":
        torch.cuda.empty_cache()


def process_group(device: torch.device) -> None:
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=60),
        **kwargs,
    )
    t = torch.full((1024,), 2.0, device=device)
    dist.all_reduce(t)
    ok = bool((t == 2.0).all())
    dist.destroy_process_group()
    ROWS.append(
        Row(f"one-rank {backend} process group", "ok" if ok else "FAILED", "all_reduce of 1024 values")
    )
    if not ok:
        raise SystemExit(f"{backend} all_reduce returned wrong values")


def cli_training(engine: str, device: torch.device, steps: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "dist_vgg.cli",
            "train",
            "--recipe",
            "tiny-A",
            "--run-dir",
            f"{tmp}/run",
            "--engine",
            engine,
            "--set",
            f"schedule.max_steps={steps}",
            "--set",
            f"runtime.device={device.type}",
            "--set",
            "runtime.log_every=5",
        ]
        t = time.perf_counter()
        r = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        ok = r.returncode == 0 and (Path(tmp) / "run" / "final").exists()
        lines = [ln for ln in r.stderr.splitlines() if " step " in ln]
        ROWS.append(
            Row(
                f"tiny-A {steps} steps via CLI ({engine})",
                "ok" if ok else f"FAILED rc={r.returncode}",
                f"{time.perf_counter() - t:.0f}s; " + (lines[-1].split("] ")[-1][:70] if lines else ""),
            )
        )
        if not ok:
            say(r.stderr[-3000:])
        return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script itself")
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.dry_run:
        device, dtype = torch.device("cpu"), None
        args.width, args.crop, args.classes, args.warmup, args.iters, batches = 1 / 16, 32, 10, 1, 2, (4, 8)
        peak = matmul_tflops(device, torch.float32, 256, 5)
        compile_modes = (False,)
    else:
        if not torch.cuda.is_available():
            say("gpu_check: this PyTorch sees no CUDA device (use --dry-run to check the script on a CPU)")
            return 2
        device, dtype = torch.device("cuda", 0), torch.bfloat16
        torch.backends.cudnn.benchmark = True
        args.width, args.crop, args.classes, args.warmup, args.iters, batches = (
            1.0,
            224,
            1000,
            3,
            10,
            (64, 128),
        )
        peak = matmul_tflops(device, torch.bfloat16, 8192, 50)
        compile_modes = (False, True)
    say(
        f"torch {torch.__version__}, device {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}"
    )
    ROWS.append(Row("matmul rate", f"{peak:.1f} TFLOP/s", "bf16 8192² (fp32 256² in --dry-run)"))
    for compiled in compile_modes:
        for config in ("D", "E"):
            for batch in batches:
                if time.perf_counter() - t0 > 170 and not args.dry_run:
                    ROWS.append(Row(f"VGG {config} b{batch} compile={compiled}", "skipped", "time budget"))
                    continue
                vgg_steps(config, batch, compiled, args, device, dtype, peak)
    process_group(device)
    ok = cli_training("ddp", device, 20)
    try:
        import deepspeed  # noqa: F401

        ok = cli_training("deepspeed", device, 5) and ok
    except ImportError:
        ROWS.append(
            Row("DeepSpeed engine", "skipped", "DeepSpeed not installed (place its wheel in bench/wheels/)")
        )
    say("")
    say(f"{'check':<36} {'result':<16} detail")
    for r in ROWS:
        say(f"{r.check:<36} {r.result:<16} {r.detail}")
    vgg16 = [r for r in ROWS if r.check.startswith("VGG-16") and "img/s" in r.result]
    best = max((float(r.result.split()[0].replace(",", "")) for r in vgg16), default=0.0)
    share = best * 3 * 2 * 15.47e9 / 1e12 / peak if not args.dry_run else 0.0
    say(f"total {time.perf_counter() - t0:.0f}s")
    say(f"RESULT gpu_check_vgg16_train {best:.0f} img/s ratio={share:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
