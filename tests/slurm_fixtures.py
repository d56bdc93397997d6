"""Data and settings shared by the SLURM tests: one tiny synthetic dataset sharded once per session, and the
environment and job shape that make slurm/*.sh run CPU-only on the local two-node cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_cluster import REPO, SlurmCluster

PYTHON = os.environ.get("DIST_VGG_PYTHON", sys.executable)
# Two nodes, one rank each, no GPUs, one CPU per rank: the scripts' 8-GPU defaults overridden the SLURM way.
CPU_SHAPE = ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=15")
# Tiny training: global batch 8 over 2 ranks (5 steps per epoch on 40 images), no per-epoch validation,
# a progress line, a stop-flag check and a checkpoint every step, a short collective timeout.
TINY_TRAIN_ARGS = (
    "--set optim.global_batch=8 --set optim.max_micro_batch=4 --set runtime.validate=false "
    "--set runtime.log_every=1 --set runtime.check_every=1 --set checkpoint.every_steps=1 "
    "--set checkpoint.keep_last=2"
)
PREP_ARGS = ("--shard-samples", "10", "--fast")


def job_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Settings every test job gets (the scripts read DIST_VGG_*; PYTHONPATH makes the checkout importable)."""
    env = {
        "DIST_VGG_PYTHON": PYTHON,
        "PYTHONPATH": str(REPO),
        "DIST_VGG_RUN_ROOT": str(tmp / "runs"),
        "DIST_VGG_RECIPE_SET": "tiny",
        "DIST_VGG_PREFLIGHT": "0",
        "DIST_VGG_PG_TIMEOUT_S": "30",
        "DIST_VGG_EXIT_WAIT": "15",
    }
    env.update(extra)
    return env


def run_prep(*args: str, timeout: float = 180) -> None:
    p = subprocess.run(
        [PYTHON, "-m", "data_prep", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, f"data_prep {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 classes × 8 train + 4 val images in ImageNet's raw layout, small sizes for 32-pixel crops."""
    raw = tmp_path_factory.mktemp("slurm-data") / "raw"
    run_prep(
        "synthetic",
        str(raw),
        "--classes",
        "5",
        "--train-per-class",
        "8",
        "--val-per-class",
        "4",
        "--size",
        "small",
    )
    return raw


@pytest.fixture(scope="session")
def shards(synthetic_raw: Path) -> Path:
    """The reference: a single-process data_prep run over `synthetic_raw`."""
    out = synthetic_raw.parent / "shards"
    run_prep("imagenet", str(synthetic_raw), "--out", str(out), "--workers", "1", *PREP_ARGS)
    return out


def submit(cluster: SlurmCluster, script: str, tmp: Path, *options: str, **env: str) -> str:
    """sbatch slurm/<script> with the CPU shape, from `tmp` (the job log lands there as %x-%j.out)."""
    return cluster.sbatch(REPO / "slurm" / script, *CPU_SHAPE, *options, env=job_env(tmp, **env), cwd=tmp)
