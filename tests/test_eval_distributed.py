"""A rank whose input loses an image: rank 0 detects the gap after the pass and every rank stops with the
same coverage error (real gloo process group), instead of the others waiting for a collective."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.eval_fixtures import ROOT

pytestmark = pytest.mark.timeout(120)


def test_a_lost_image_stops_every_rank_with_the_coverage_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.eval_dist_worker"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=100) for p in procs]
    assert [p.returncode for p in procs] == [3, 3], [o[1][-2000:] for o in outs]
    for rank, (out, _) in enumerate(outs):
        assert (
            f"rank {rank}: network 1, dense, Q=32: evaluated 6 images but the manifest's validation split has 7"
            in out
        )
