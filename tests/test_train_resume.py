"""Exact resume and preemption on a real 2-rank gloo job driven through the CLI.

One uninterrupted run is the reference. A second run of the same command is SIGKILLed twice (each time
once the log shows the chosen step; the second time rank 1 alone, so rank 0 must fail fast, dump its flight
recorder and exit ERROR naming the timeout setting) and rerun; then it gets SIGUSR1 on one rank (→ every rank checkpoints at
the same step, exit 75), is rerun, gets SIGTERM (→ checkpoint, exit 4), and is rerun to the end. Its final
weights must be bitwise equal to the reference: no step lost or repeated, RNG and data position restored."""

from __future__ import annotations

import signal

import pytest

from dist_vgg import checkpoint as ckpt
from dist_vgg.train import exit_codes
from tests.train_fixtures import (
    assert_bitwise_equal,
    final_weights,
    kill,
    launch,
    log_size,
    run,
    wait_all,
    wait_for_log,
)

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

ARGS = [
    "--recipe",
    "tiny-A",
    "--set",
    "synthetic.steps_per_epoch=4",
    "--set",
    "schedule.max_epochs=4",
    "--set",
    "optim.global_batch=16",
    "--set",
    "synthetic.val_images=16",
    "--set",
    "checkpoint.every_steps=1",
    "--set",
    "checkpoint.keep_last=3",
    "--set",
    "checkpoint.every_minutes=0.0",
    "--set",
    "runtime.log_every=1",
    "--set",
    "runtime.check_every=1",
    "--set",
    "runtime.pg_timeout_s=30.0",
]


FLIGHT_RECORDER = {"TORCH_FR_BUFFER_SIZE": "200"}
"""Collectives are recorded; with no TORCH_FR_DUMP_TEMP_FILE the trainer dumps into RUN/flight_recorder/."""


def step_line(n: int) -> str:
    return f" step {n} ("


def test_killed_and_preempted_run_ends_bitwise_equal_to_uninterrupted(tmp_path):
    ref, run_dir, logs = tmp_path / "ref", tmp_path / "run", tmp_path / "logs"
    assert run([*ARGS, "--run-dir", str(ref)], 2, logs) == [0, 0]
    args = [*ARGS, "--run-dir", str(run_dir)]
    log = run_dir / "train.log"

    # SIGKILL mid-epoch (both ranks: the lock stays behind and is taken over on rerun)
    before = log_size(log)
    procs = launch(args, 2, logs, FLIGHT_RECORDER)
    wait_for_log(log, step_line(3), procs, after=before)
    kill(procs, signal.SIGKILL)
    wait_all(procs)
    assert (run_dir / "LOCK").exists(), "a SIGKILLed job leaves its lock behind (taken over on rerun)"

    # SIGKILL rank 1 alone at the end of epoch 2 (validation, then its checkpoint): rank 0's next collective
    # fails at once (gloo sees the closed socket), it dumps its flight recorder and exits ERROR naming the timeout
    before = log_size(log)
    procs = launch(args, 2, logs, FLIGHT_RECORDER)
    wait_for_log(log, step_line(8), procs, after=before)
    kill(procs[1:], signal.SIGKILL)
    assert wait_all(procs)[0] == exit_codes.ERROR
    text = log.read_bytes()[before:].decode()
    assert "took over a stale lock" in text and "resuming from step-" in text
    assert "error: a collective failed on rank 0" in text and "runtime.pg_timeout_s=30 s" in text
    assert (run_dir / "flight_recorder" / "rank_0").stat().st_size > 0
    assert f"Flight recorder: {run_dir / 'flight_recorder' / 'rank_0'}" in text

    # SIGUSR1 to rank 1 only: both ranks agree, save the same step and ask for a requeue
    before = log_size(log)
    procs = launch(args, 2, logs, FLIGHT_RECORDER)
    wait_for_log(log, step_line(11), procs, after=before)
    procs[1].send_signal(signal.SIGUSR1)
    assert wait_all(procs) == [exit_codes.REQUEUE, exit_codes.REQUEUE]
    text = log.read_bytes()[before:].decode()
    assert "resuming from step-" in text
    saved = int(text.split("SIGUSR1: saved step ")[1].split(";")[0])
    d = ckpt.step_dir(run_dir, saved)
    assert ckpt.is_committed(d) and ckpt.rank_file(d, 0).is_file() and ckpt.rank_file(d, 1).is_file()
    assert not (run_dir / "LOCK").exists()

    # SIGTERM: save and a plain exit, no requeue
    before = log_size(log)
    procs = launch(args, 2, logs, FLIGHT_RECORDER)
    wait_for_log(log, step_line(saved + 2), procs, after=before)
    kill(procs, signal.SIGTERM)
    assert wait_all(procs) == [exit_codes.STOPPED, exit_codes.STOPPED]
    assert "SIGTERM: saved step" in log.read_bytes()[before:].decode()

    assert wait_all(launch(args, 2, logs, FLIGHT_RECORDER)) == [0, 0]
    assert_bitwise_equal(final_weights(run_dir), final_weights(ref))
    text = log.read_text()
    for n in range(1, 17):  # every step ran; resumed runs pick up after the last committed step
        assert step_line(n) in text
    assert len(ckpt.committed_checkpoints(run_dir)) <= 3
