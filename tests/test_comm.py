"""Gradient communication options (dist_vgg.train.comm) on real gloo process groups of 2 processes started by
torchrun: fp32 DDP equals single-process training, bf16 compression stays within bf16 rounding of the exact
average, small buckets split the model into many all-reduces, and bad settings are refused by name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from dist_vgg.train.comm import CommConfig, apply_comm, ddp_kwargs

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(tmp_path: Path, bucket_cap_mb: float, compress: str) -> dict:
    out = tmp_path / f"comm_{compress}_{bucket_cap_mb}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(ROOT / "tests" / "comm_worker.py"),
        "--bucket-cap-mb",
        str(bucket_cap_mb),
        "--compress",
        compress,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(240)
def test_fp32_ddp_equals_single_process_with_small_buckets(tmp_path: Path) -> None:
    r = _run_two_ranks(tmp_path, bucket_cap_mb=0.02, compress="none")
    assert r["world"] == 2
    assert r["num_buckets"] > 3, "a 0.02 MB cap must split the tiny VGG into several buckets"
    assert r["max_abs_vs_single"] <= 1e-6 + 1e-5 * r["max_abs_grad"]
    assert r["max_abs_vs_exact"] <= 1e-7 + 1e-6 * r["max_abs_grad"]
    assert "bucket_cap_mb=0.02" in r["mismatch_error"] and "bucket_cap_mb=0.04" in r["mismatch_error"]


@pytest.mark.timeout(240)
def test_bf16_compression_within_bf16_rounding_of_exact_average(tmp_path: Path) -> None:
    r = _run_two_ranks(tmp_path, bucket_cap_mb=25, compress="bf16")
    assert r["max_excess_over_bf16_bound"] <= 0.0, json.dumps(r)
    # The hook really ran: bf16 rounding makes the result differ from the exact fp32 average somewhere.
    assert r["grads_differ_from_exact"]
    assert r["max_abs_vs_exact"] > 0


def test_config_refuses_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match=r"comm\.bucket_cap_mb must be > 0 \(got 0\)"):
        CommConfig(bucket_cap_mb=0)
    with pytest.raises(ValueError, match=r"comm\.compress must be one of none, bf16 \(got 'fp8'\)"):
        CommConfig(compress="fp8")
    assert ddp_kwargs(CommConfig(bucket_cap_mb=50)) == {"bucket_cap_mb": 50, "gradient_as_bucket_view": True}


def test_apply_comm_refuses_a_plain_module() -> None:
    with pytest.raises(TypeError, match=r"needs a DistributedDataParallel model.*wrap_ddp"):
        apply_comm(nn.Linear(2, 2), CommConfig())
