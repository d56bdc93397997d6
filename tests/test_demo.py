"""`make demo`'s entry point as a user runs it, on a tiny scale: interrupted with Ctrl-C in the middle of a
training stage, it says how to go on; run again, it skips the finished stages, completes, and writes the
summary and the paper-shaped table from one run only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import wait_for_log

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--classes",
    "3",
    "--train-per-class",
    "40",
    "--val-per-class",
    "6",
    "--epochs-a",
    "2",
    "--epochs-d",
    "1",
]
"""3 classes × 40 (+ 6 val) images, A for 2 epochs, each D for 1: the whole flow in about a minute on 2 cores."""


def _demo(out: Path, log: Path) -> subprocess.Popen:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with open(log, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "dist_vgg.demo", "--out", str(out), *TINY],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
            preexec_fn=_interruptible,
        )


def _interruptible() -> None:
    """Ctrl-C's default action in the demo, as in a terminal's foreground job: a test run in the background
    (`nohup`, `cmd &`) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(400)
def test_demo_interrupted_then_rerun_resumes_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "demo_out"
    first = _demo(out, tmp_path / "first.log")
    # Ctrl-C while D-from-A trains: the terminal signals the whole foreground process group.
    wait_for_log(tmp_path / "first.log", "--run-dir " + str(out / "runs" / "D-from-A"), [first], timeout=180)
    wait_for_log(tmp_path / "first.log", "training 3 steps", [first], timeout=60)
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=60) == 130
    text = (tmp_path / "first.log").read_text()
    assert "interrupted; run `make demo` again to resume where it stopped" in text
    done = json.loads((out / "demo-state.json").read_text())["done"]
    # D-from-A trains 3 steps: the signal lands in it or, on a slow machine, in a later stage
    assert done[:3] == ["raw", "shards", "train-A"], done
    assert not (out / "summary.txt").exists()

    second = _demo(out, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    text = (tmp_path / "second.log").read_text()
    assert f"resuming the demo in {out} (already done: {', '.join(done)})" in text
    assert "train-A: already trained" in text
    summary = (out / "summary.txt").read_text()
    assert summary.count("ensemble D+A") == 1 and summary.count("D-from-A + A") == 1
    for net in ("A", "D-from-A", "D-random"):
        assert f"- {net}: top-1 error" in summary
    assert (out / "curves-D-from-A-vs-random.png").read_bytes()[:4] == b"\x89PNG"
