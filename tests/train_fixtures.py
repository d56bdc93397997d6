"""Helpers for the trainer tests: run `dist-vgg train` as real processes (one per rank, with the variables
torchrun sets), wait for a step in the log by polling (never by sleeping a guessed time), and read weights."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

EXACT = [
    "--set",
    "model.dropout=0.0",
    "--set",
    "runtime.log_every=1",
    "--set",
    "runtime.check_every=1",
    "--set",
    "runtime.pg_timeout_s=30.0",
    "--set",
    "checkpoint.every_minutes=0.0",
]
"""Settings the exactness tests share: no dropout, a log line and a stop check every step, short timeouts."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID")
    }
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a rank that hangs dumps its stacks when `wait_all` aborts it
    return env


def train_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "dist_vgg.cli", "train", *args]


def launch(
    args: list[str], world: int, log_dir: Path, extra_env: dict[str, str] | None = None
) -> list[subprocess.Popen]:
    """Start `world` ranks of `dist-vgg train ARGS` (torchrun-style variables); stdout/stderr to files."""
    port = free_port()
    procs = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        env = {**base_env(), **(extra_env or {})}
        if world > 1:
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world),
                LOCAL_WORLD_SIZE=str(world),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
        log = log_dir / f"rank{rank}-{time.monotonic_ns()}.log"
        with open(log, "w") as out:  # the child keeps its copy
            proc = subprocess.Popen(
                train_argv(*args), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        LOGS[proc.pid] = log
        procs.append(proc)
    return procs


LOGS: dict[int, Path] = {}
"""Each launched rank's log, by pid (for `wait_all`'s report)."""


def reap(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Wait for `procs` until the deadline; a process still running then is made to dump its threads' stacks
    (faulthandler on SIGABRT, with PYTHONFAULTHANDLER set) before it is killed. Returns the positions of those
    that were still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    hung = [i for i, p in enumerate(procs) if p.poll() is None]
    for i in hung:
        procs[i].send_signal(signal.SIGABRT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return hung


def wait_all(procs: list[subprocess.Popen], timeout: float = 180) -> list[int]:
    """Exit codes of `procs`; a rank still running at the deadline fails the test with its stacks (see `reap`)
    and the tail of every rank's log."""
    hung = reap(procs, timeout)
    if hung:
        tails = "\n".join(
            f"--- {LOGS[p.pid]} (exit {p.returncode}):\n{LOGS[p.pid].read_text()[-3000:]}"
            for p in procs
            if p.pid in LOGS
        )
        raise AssertionError(
            f"{len(hung)} of {len(procs)} ranks still running after {timeout:.0f} s:\n{tails}"
        )
    return [p.returncode for p in procs]


def run(args: list[str], world: int, log_dir: Path, timeout: float = 180) -> list[int]:
    return wait_all(launch(args, world, log_dir), timeout)


def log_size(log: Path) -> int:
    return log.stat().st_size if log.is_file() else 0


def wait_for_log(
    log: Path, text: str, procs: list[subprocess.Popen], after: int = 0, timeout: float = 120
) -> None:
    """Poll `log` (from byte `after`) until it contains `text`; fails early if every process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_bytes()[after:].decode(errors="replace"):
            return
        if all(p.poll() is not None for p in procs):
            raise AssertionError(f"processes ended before {text!r} appeared in {log}")
        time.sleep(0.02)
    raise AssertionError(f"{text!r} did not appear in {log} within {timeout}s")


def kill(procs: list[subprocess.Popen], sig: int = signal.SIGKILL) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    part = torch.load(run_dir / "final" / "rank-00000.pt", map_location="cpu", weights_only=True)
    return part["model"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max abs diff {(a[k] - b[k]).abs().max().item()})"


def log_text(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


REFERENCE_ARGS = [
    "--recipe",
    "tiny-A",
    *EXACT,
    "--set",
    "optim.global_batch=16",
    "--set",
    "synthetic.val_images=16",
    "--set",
    "schedule.max_steps=2",
]
"""Two exact steps at global batch 16: the 1-rank DDP reference of the exactness tests (DDP and DeepSpeed)."""


@functools.cache
def one_rank_reference(root: Path) -> Path:
    """The run folder of one 1-rank DDP run of REFERENCE_ARGS under `root`, trained once per test session
    (test_train_exact and test_train_deepspeed both compare against it; pass tmp_path_factory.getbasetemp())."""
    run_dir = root / "one-rank-reference"
    codes = run([*REFERENCE_ARGS, "--run-dir", str(run_dir)], 1, root / "one-rank-reference-logs")
    assert codes == [0], f"the 1-rank reference run failed: see {root / 'one-rank-reference-logs'}"
    return run_dir
