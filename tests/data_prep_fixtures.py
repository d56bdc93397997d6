"""Shared helpers and fixtures for the data_prep tests: a tiny synthetic ImageNet with every kind of problem
file, and one reference conversion of it that the other tests compare against."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import synthetic

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SPEC = synthetic.SynthSpec(classes=4, train_per_class=8, val_per_class=3, size="small", seed=3, problems=True)
SHARD = ["--shard-samples", "8"]


def prep_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in (
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_STEP_ID",
        "PMI_RANK",
        "PMI_SIZE",
        "RANK",
        "WORLD_SIZE",
    ):
        env.pop(var, None)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def run_prep(
    *args: str, mpi: int = 0, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python -m data_prep ARGS` as a user runs it (under `mpiexec -n MPI` when asked)."""
    cmd = [sys.executable, "-m", "data_prep", *args]
    if mpi:
        cmd = [str(VENV_BIN / "mpiexec"), "-n", str(mpi), *cmd]
    return subprocess.run(
        cmd, cwd=REPO, env=env or prep_env(), capture_output=True, text=True, timeout=timeout
    )


def same_tree(a: Path, b: Path) -> list[str]:
    """Files that differ between two prepared datasets (the run state folder .prep aside)."""
    diffs = []

    def walk(cmp: filecmp.dircmp, rel: str) -> None:
        diffs.extend(f"{rel}{n} only on one side" for n in cmp.left_only + cmp.right_only if n != ".prep")
        for name in cmp.common_files:
            if not filecmp.cmp(Path(cmp.left, name), Path(cmp.right, name), shallow=False):
                diffs.append(f"{rel}{name}")
        for name, sub in cmp.subdirs.items():
            if name != ".prep":
                walk(sub, f"{rel}{name}/")

    walk(filecmp.dircmp(a, b), "")
    return diffs


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dp") / "raw"
    synthetic.generate(root, SPEC)
    return root


@pytest.fixture(scope="session")
def problems(raw) -> list[dict]:
    return json.loads((raw / synthetic.PROBLEMS_FILE).read_text())


@pytest.fixture(scope="session")
def prepared(raw, tmp_path_factory) -> Path:
    """The reference conversion: one process, one worker, through the real CLI."""
    out = tmp_path_factory.mktemp("dp") / "ref"
    res = run_prep("imagenet", str(raw), "--out", str(out), *SHARD)
    assert res.returncode == 0, res.stderr
    return out
