"""Exact epochs in real multi-process runs (gloo): equal training batch counts and exact-once evaluation for
world sizes 1, 2 and 3 on shards of uneven size, with node-local staging in the 2- and 3-rank runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_fixtures import make_dataset

pytestmark = pytest.mark.timeout(150)
ROOT = Path(__file__).resolve().parent.parent
TRAIN, VAL = [7, 5, 9, 2], [4, 6, 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(
    root: Path, out: Path, world: int, per_node: int, loader: str, stage: Path | None
) -> list[subprocess.Popen]:
    port, procs = _free_port(), []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank % per_node),
            "LOCAL_WORLD_SIZE": str(per_node),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
        node_dir = ["--stage", str(stage / f"node{rank // per_node}")] if stage else []
        cmd = [sys.executable, "-m", "tests.pipeline_worker", str(root), str(out / f"w{world}r{rank}.json")]
        procs.append(subprocess.Popen([*cmd, "--loader", loader, *node_dir], env=env, cwd=ROOT))
    return procs


@pytest.mark.slow
def test_equal_batches_and_exact_once_eval(tmp_path):
    root = make_dataset(tmp_path / "ds", TRAIN, VAL)
    n_train, n_val = sum(TRAIN), sum(VAL)
    # world 1: plain; world 2: two ranks on one node sharing a staging folder; world 3: three 1-rank nodes
    runs = {1: (1, "cpu", None), 2: (2, "dali", tmp_path / "stage2"), 3: (1, "cpu", tmp_path / "stage3")}
    procs = [p for world, run in runs.items() for p in _launch(root, tmp_path, world, *run)]  # all at once
    try:
        for p in procs:
            assert p.wait(timeout=120) == 0, "a rank failed"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for world, (_, _, stage) in runs.items():
        results = [json.loads((tmp_path / f"w{world}r{r}.json").read_text()) for r in range(world)]
        expect = n_train // (2 * world)
        for r in results:
            assert r["batches_per_epoch"] == expect and r["counts"] == [expect, expect], (world, r)
        for epoch in range(2):
            used = [i for r in results for i in r["seen"][epoch]]
            assert len(used) == len(set(used)) == expect * 2 * world  # no sample twice in an epoch
        for mode in ("32", "None"):
            got = sorted(i for r in results for i in r["eval"][mode])
            assert got == list(range(n_val)), (world, mode)  # every sample exactly once, no padding
        if world == 3:  # each node staged only the shards of its third: samples [0,7), [7,15), [15,23)
            staged = [sorted(p.name for p in (stage / f"node{k}" / "train").glob("*.tar")) for k in range(3)]
            assert staged == [
                ["train-000000.tar"],
                ["train-000001.tar", "train-000002.tar"],
                ["train-000002.tar", "train-000003.tar"],
            ]
        if world == 2:
            assert len(list((stage / "node0" / "train").glob("*.tar"))) == len(TRAIN)
