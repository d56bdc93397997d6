"""Checkpoint format: atomic commit markers, keep-last, `load_weights` on every kind of input, refusal of
pickled code, and the run lock."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dist_vgg import checkpoint as ckpt
from dist_vgg.eval.sources import train_scale
from dist_vgg.models import VGGSpec, build_vgg
from dist_vgg.train.lock import LockError, RunLock
from dist_vgg.weights import Preprocessing, Weights, WeightsFormatError, save_weights

pytestmark = pytest.mark.timeout(60)

SPEC = VGGSpec("A", 5, 0.0625, 32, 0.5)


def write_checkpoint(run_dir, step, world=2, commit=True):
    d = ckpt.step_dir(run_dir, step)
    model = build_vgg("A", 5, 0.0625, 32)
    for r in range(world):
        payload = {"step": step, "world_size": world, "rank_state": {"torch_rng": torch.get_rng_state()}}
        if r == 0:
            payload.update(
                model={k: v.clone() for k, v in model.state_dict().items()},
                spec=SPEC.to_dict(),
                preprocessing={"mean": [1.0, 2.0, 3.0]},
                classes=None,
                config={"augment": {"scale_min": 256, "scale_max": 512, "crop": 224}},
            )
        ckpt.save_rank_part(d, r, payload)
    if commit:
        ckpt.commit(d, {"step": step})
    return d, model


def test_commit_marker_keep_last_and_final(tmp_path):
    for s in (1, 2, 3, 4):
        write_checkpoint(tmp_path, s)
    write_checkpoint(tmp_path, 5, commit=False)
    assert [p.name for p in ckpt.committed_checkpoints(tmp_path)] == [f"step-{s:08d}" for s in (1, 2, 3, 4)]
    ckpt.mark_final(tmp_path, ckpt.step_dir(tmp_path, 2))
    removed = ckpt.prune(tmp_path, keep_last=1)
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000003"]
    assert ckpt.final_checkpoint(tmp_path) == ckpt.step_dir(tmp_path, 2).resolve()
    assert [p.name for p in ckpt.remove_uncommitted(tmp_path)] == ["step-00000005"]
    assert not list(tmp_path.rglob(".*tmp*")), "no temporary files left behind"


def test_load_weights_from_run_folder_checkpoint_folder_file_and_weights_file(tmp_path):
    d, model = write_checkpoint(tmp_path / "run", 7)
    for source in (tmp_path / "run", d, ckpt.rank_file(d, 0)):
        w = ckpt.load_weights(source)
        assert w.spec == SPEC and w.preprocessing.mean == (1.0, 2.0, 3.0) and w.extra["step"] == 7
        # evaluation's "train S" column: the jittered range of the run's augment section
        assert w.extra["train_scale"] == "256-512" and w.extra["augment"]["crop"] == 224
        assert train_scale(w) == "256-512"
        assert all(torch.equal(w.state_dict[k], v) for k, v in model.state_dict().items())
    save_weights(tmp_path / "w.pt", Weights(SPEC, model.state_dict(), Preprocessing((0.0, 0.0, 0.0))))
    assert ckpt.load_weights(tmp_path / "w.pt").spec == SPEC


def test_load_weights_errors_name_the_problem(tmp_path):
    d, _ = write_checkpoint(tmp_path / "run", 3, commit=False)
    with pytest.raises(ckpt.CheckpointError, match="no COMMITTED marker"):
        ckpt.load_weights(d)
    with pytest.raises(ckpt.CheckpointError, match="holds no committed checkpoint"):
        ckpt.load_weights(tmp_path / "run")
    with pytest.raises(WeightsFormatError, match="rank 1's part"):
        ckpt.load_weights(ckpt.rank_file(d, 1))
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(WeightsFormatError, match="neither a dist-vgg checkpoint nor"):
        ckpt.load_weights(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsFormatError, match="not a readable torch file"):
        ckpt.load_weights(tmp_path / "junk.pt")
    with pytest.raises(WeightsFormatError, match="does not exist"):
        ckpt.load_weights(tmp_path / "missing")


class RunsCode:
    """A pickled object whose unpickling runs a command (what a malicious checkpoint does)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused_and_nothing_runs(tmp_path):
    d, _ = write_checkpoint(tmp_path / "run", 1)
    marker = tmp_path / "PWNED"
    part = torch.load(ckpt.rank_file(d, 0), weights_only=True)
    part["evil"] = RunsCode(str(marker))
    torch.save(part, ckpt.rank_file(d, 0))
    with pytest.raises(WeightsFormatError, match="pickled objects that could run code"):
        ckpt.load_weights(tmp_path / "run")
    assert not marker.exists()
    # and through the CLI's --init-from: a clear error, exit 1, nothing executed
    env = {**os.environ, "PYTHONPATH": str(os.getcwd()), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dist_vgg.cli",
            "train",
            "--recipe",
            "tiny-D",
            "--init-from",
            str(tmp_path / "run"),
            "--run-dir",
            str(tmp_path / "d"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "pickled objects that could run code" in r.stderr and not marker.exists()


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    first = RunLock(tmp_path, job_id=None)
    first.acquire()
    with pytest.raises(LockError, match="in use by another job"):
        RunLock(tmp_path, job_id=None).acquire()
    first.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "LOCK").write_text(
        f'{{"host": "{os.uname().nodename}", "pid": {dead.pid}, "start": null, "job_id": null}}'
    )
    lock = RunLock(tmp_path, job_id=None)
    lock.acquire()
    assert lock.took_over["pid"] == dead.pid
    lock.release()
    (tmp_path / "LOCK").write_text('{"host": "elsewhere", "pid": 1, "job_id": "77"}')
    with pytest.raises(LockError, match="SLURM job 77"):
        RunLock(tmp_path, job_id="78").acquire()
    same_job = RunLock(tmp_path, job_id="77")  # a requeued job on another node
    same_job.acquire()
    same_job.release()
