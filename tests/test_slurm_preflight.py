"""The preflight all-reduce check: the slow-node rule on given figures, bad settings, and the real command on
two gloo ranks under torchrun (the SLURM tests run it through srun on two nodes)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dist_vgg.preflight import NodeFigures, PreflightConfig, PreflightReport, dump_flight_recorder, find_slow

REPO = Path(__file__).resolve().parents[1]


def test_a_node_far_below_the_median_is_named() -> None:
    slow = find_slow({"n1": 10.0, "n2": 9.5, "n3": 2.0, "n4": 10.4}, slow_fraction=0.5, min_gbps=0)
    assert list(slow) == ["n3"]
    assert "2.000 GB/s < 50% of the median 9.750 GB/s" in slow["n3"]


def test_even_nodes_are_not_named_unless_below_the_floor() -> None:
    even = {"n1": 10.0, "n2": 9.0, "n3": 11.0}
    assert find_slow(even, slow_fraction=0.5, min_gbps=0) == {}
    assert set(find_slow(even, slow_fraction=0.5, min_gbps=9.5)) == {"n2"}
    assert find_slow({}, 0.5, 0) == {}


def test_report_names_the_slow_node_and_how_to_avoid_it() -> None:
    report = PreflightReport(
        world_size=4,
        backend="nccl",
        size_bytes=64 * 2**20,
        allreduce_s=0.01,
        bus_gbps=10.0,
        nodes=[NodeFigures("gpu1", [0, 1], 200.0), NodeFigures("gpu2", [2, 3], 190.0, 1.5)],
        slow={"gpu2": "1.500 GB/s < 50% of the median 20.000 GB/s"},
    )
    text = "\n".join(report.lines())
    assert "node gpu1: intra-node all-reduce 200.000 GB/s, link to node 0 reference node" in text
    assert "node gpu2: intra-node all-reduce 190.000 GB/s, link to node 0 1.500 GB/s  SLOW:" in text
    assert "SLOW NODE(S): gpu2" in text and "--exclude" in text


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"size_mb": 0}, "--size-mb"), ({"iters": 0}, "--iters"), ({"slow_fraction": 2.0}, "--slow-fraction")],
)
def test_bad_settings_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=re.escape(flag)):
        PreflightConfig(**kwargs)


def _cli(*args: str, torchrun: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))
    }
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    with socket.socket() as s:  # a free port for the rendezvous (0 would reach the ranks as port 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}"]
    cmd = [*(launcher if torchrun else [sys.executable]), "-m", "dist_vgg.cli", "preflight", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_gloo_ranks_measure_and_report() -> None:
    p = _cli("--device", "cpu", "--size-mb", "1", "--iters", "2", "--timeout-s", "60", torchrun=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"preflight: 1 nodes, 2 ranks, gloo, 1 MiB messages", p.stdout), p.stdout
    assert re.search(r"world all-reduce [0-9.]+ ms, bus bandwidth [0-9.]+ GB/s", p.stdout)
    assert re.search(r"intra-node all-reduce [0-9.]+ GB/s", p.stdout), p.stdout

    # An impossible floor fails the check on every rank, naming the node.
    p = _cli("--device", "cpu", "--size-mb", "1", "--iters", "1", "--min-gbps", "1e6", torchrun=True)
    assert p.returncode != 0
    assert "SLOW NODE(S):" in p.stdout and "below --min-gbps" in p.stderr


def test_one_process_has_nothing_to_measure() -> None:
    p = _cli("--device", "cpu", timeout=60)
    assert p.returncode == 0 and "nothing to measure" in p.stdout


def test_bad_setting_is_one_clear_line() -> None:
    p = _cli("--device", "cpu", "--iters", "0", timeout=60)
    assert (
        p.returncode == 1 and p.stderr.strip().startswith("preflight: need") and "Traceback" not in p.stderr
    )


FR_WORKER = """
import pickle, sys, torch, torch.distributed as dist
from dist_vgg.preflight import dump_flight_recorder
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
t = torch.ones(4)
for _ in range(3):
    dist.all_reduce(t)
path = dump_flight_recorder(0)
entries = pickle.loads(path.read_bytes())["entries"]
print(path, [e["profiling_name"] for e in entries])
dist.destroy_process_group()
"""


def test_gloo_collectives_land_in_the_flight_recorder_dump(tmp_path: Path) -> None:
    """The CPU equivalent of NCCL's dump on timeout: gloo records when TORCH_FR_BUFFER_SIZE > 0, and
    dump_flight_recorder writes the buffer where the SLURM scripts point TORCH_FR_DUMP_TEMP_FILE."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_FR_BUFFER_SIZE": "100"}
    env["TORCH_FR_DUMP_TEMP_FILE"] = str(tmp_path / "flight_recorder" / "rank_")
    p = subprocess.run(
        [sys.executable, "-c", FR_WORKER, str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert (
        f"{tmp_path}/flight_recorder/rank_0 ['gloo:all_reduce', 'gloo:all_reduce', 'gloo:all_reduce']"
        in p.stdout
    )
    assert dump_flight_recorder(0, env={}) is None  # no destination configured: nothing written
