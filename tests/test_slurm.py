"""slurm/*.sh against a real SLURM cluster (cluster/local: munge, slurmctld, two slurmd nodes on this host),
CPU-only with gloo, the tiny recipes and synthetic shards. Every wait polls squeue/scontrol or the job log with a
deadline. Skipped without SLURM, failed instead under DIST_VGG_REQUIRE_INTEGRATION=1."""

from __future__ import annotations

import filecmp
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import slurm_cluster as cluster_mod
from tests import slurm_fixtures as fx
from tests.integration import require_integration
from tests.slurm_cluster import REPO, SlurmCluster
from tests.slurm_fixtures import CPU_SHAPE, PREP_ARGS, TINY_TRAIN_ARGS, job_env, submit

# Session fixtures: one cluster, one synthetic dataset and its single-process shards for every test here.
slurm_cluster = cluster_mod.slurm_cluster
synthetic_raw = fx.synthetic_raw
shards = fx.shards

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STEP_LINE = re.compile(r"\bepoch \d+ step (\d+) \(")


def trained_steps(log: str) -> list[int]:
    """Steps of the trainer's progress lines, in log order."""
    return [int(m.group(1)) for m in STEP_LINE.finditer(log)]


def test_cluster_runs_a_job_on_both_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    p = slurm_cluster.run(
        "sbatch",
        "--parsable",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--output=hello-%j.out",
        "--wrap=srun printenv SLURMD_NODENAME",
        cwd=tmp_path,
    )
    job = p.stdout.strip()
    rec = slurm_cluster.wait_state(job, timeout=60)
    assert rec["JobState"] == "COMPLETED", slurm_cluster.tail(job)
    assert sorted((tmp_path / f"hello-{job}.out").read_text().split()) == ["node1", "node2"]


def test_train_E_without_A_fails_at_once_with_how_to(
    slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    job = submit(slurm_cluster, "train_E.sh", tmp_path, DIST_VGG_DATA=str(shards))
    rec = slurm_cluster.wait_state(job, timeout=60)
    log = Path(rec["StdOut"]).read_text()
    assert rec["JobState"] == "FAILED" and rec["ExitCode"].startswith("2:"), log
    assert time.monotonic() - t0 < 30, "the check must fail before any training starts"
    assert f"starts from {tmp_path}/runs/tiny-A, which holds no finished checkpoint" in log
    assert "DIST_VGG_STAGE=S256 sbatch slurm/train_A.sh" in log and "slurm/pipeline.sh" in log
    assert "srun" not in log.split("ERROR")[0], "nothing may be launched before the check"


def test_A_on_two_nodes_then_E_from_A(slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path) -> None:
    steps = " --set schedule.max_steps=3"
    a = submit(
        slurm_cluster,
        "train_A.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + steps,
        DIST_VGG_PREFLIGHT="1",
    )
    rec = slurm_cluster.wait_state(a, timeout=240)
    log_a = Path(rec["StdOut"]).read_text()
    assert rec["JobState"] == "COMPLETED", log_a[-4000:]
    assert "launcher=slurm rank=0/2" in log_a and "node=node1 (0/2)" in log_a
    # The preflight check ran across both nodes and printed a bandwidth figure for each.
    assert re.search(r"preflight: node node1: .*reference node", log_a), log_a[-3000:]
    assert re.search(r"preflight: node node2: .*link to node 0 [0-9.]+ GB/s", log_a), log_a[-3000:]
    assert trained_steps(log_a) == [1, 2, 3]
    assert (tmp_path / "runs" / "tiny-A" / "final" / "COMMITTED").exists()

    # E, initialised from that A by default (tiny-D's settings with configuration E).
    e = submit(
        slurm_cluster,
        "train_E.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_RECIPE="tiny-D",
        DIST_VGG_RUN_DIR=str(tmp_path / "runs" / "tiny-E"),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + steps + " --set model.config=E",
    )
    rec = slurm_cluster.wait_state(e, timeout=240)
    log_e = Path(rec["StdOut"]).read_text()
    assert rec["JobState"] == "COMPLETED", log_e[-4000:]
    assert f"init_from={tmp_path}/runs/tiny-A" in log_e
    assert "init-from-A → E" in log_e, log_e[-4000:]
    assert re.search(r"copied +features\.0 +← A features\.0", log_e) and re.search(
        r"fresh +features\.\d+", log_e
    )
    assert (tmp_path / "runs" / "tiny-E" / "final" / "COMMITTED").exists()


def test_usr1_requeues_and_resumes_without_losing_a_step(
    slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path
) -> None:
    total = 40  # steps take ~0.1 s here: enough of them that the signal lands while training (< 10 epochs)
    job = submit(
        slurm_cluster,
        "train_A.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + f" --set schedule.max_steps={total}",
    )
    log = tmp_path / f"vgg-A-{job}.out"
    slurm_cluster.wait_in_log(log, r"epoch \d+ step 2 \(", timeout=180, job_id=job)
    slurm_cluster.run("scancel", "--signal=USR1", job)
    slurm_cluster.wait_in_log(log, r"SLURM_RESTART_COUNT=1", timeout=120, job_id=job)
    rec = slurm_cluster.wait_state(job, timeout=240)
    text = log.read_text()
    assert rec["JobState"] == "COMPLETED", text[-4000:]
    assert int(rec["Restarts"]) >= 1
    first, second = text.split("SLURM_RESTART_COUNT=1", 1)
    saved = re.search(r"SIGUSR1: saved step (\d+); exiting 75", first)
    assert saved, first[-3000:]
    assert "scontrol requeue" in first
    k = int(saved.group(1))
    assert re.search(rf"resuming from step-{k:08d}", second), second[-3000:]
    # Every step trained exactly once: 1..k before the requeue, k+1..8 after it.
    assert trained_steps(first) == list(range(1, k + 1))
    assert k < total and trained_steps(second) == list(range(k + 1, total + 1))
    assert (tmp_path / "runs" / "tiny-A" / "final" / "COMMITTED").exists()


def test_plain_scancel_ends_the_job_without_requeue(
    slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path
) -> None:
    job = submit(
        slurm_cluster,
        "train_A.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + " --set schedule.max_steps=500",
    )
    log = tmp_path / f"vgg-A-{job}.out"
    slurm_cluster.wait_in_log(log, r"epoch \d+ step 1 \(", timeout=180, job_id=job)
    slurm_cluster.run("scancel", job)
    rec = slurm_cluster.wait_state(job, timeout=60)
    assert rec["JobState"] == "CANCELLED" and rec["Restarts"] == "0", log.read_text()[-3000:]
    # The trainer saved on SIGTERM and asked for no requeue; the controller still holds it as CANCELLED.
    run_log = (tmp_path / "runs" / "tiny-A" / "train.log").read_text()
    assert re.search(r"SIGTERM: saved step \d+; exiting 4", run_log), run_log[-2000:]
    assert "SLURM_RESTART_COUNT=1" not in log.read_text()
    assert slurm_cluster.state_of(job) == "CANCELLED"


def _rank_pid(job: str, rank: int) -> int | None:
    """PID of the trainer process of `rank` in job `job`, read from /proc (tasks carry SLURM_JOB_ID and
    SLURM_PROCID). Its data-loader workers match too: take the process whose parent is not a match."""
    matches: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            env = dict(kv.split(b"=", 1) for kv in (d / "environ").read_bytes().split(b"\0") if b"=" in kv)
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (
            b"dist_vgg.cli" in cmd
            and b"train" in cmd
            and env.get(b"SLURM_JOB_ID") == job.encode()
            and env.get(b"SLURM_PROCID") == str(rank).encode()
        ):
            matches[int(d.name)] = ppid
    mains = [pid for pid, ppid in matches.items() if ppid not in matches]
    return mains[0] if len(mains) == 1 else None


def test_killed_rank_fails_the_job_within_the_timeout(
    slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path
) -> None:
    job = submit(
        slurm_cluster,
        "train_A.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + " --set schedule.max_steps=500",
        DIST_VGG_PG_TIMEOUT_S="20",
    )
    log = tmp_path / f"vgg-A-{job}.out"
    slurm_cluster.wait_in_log(log, r"epoch \d+ step 2 \(", timeout=180, job_id=job)
    pid = slurm_cluster.poll("rank 1's process", lambda: _rank_pid(job, 1), timeout=10)
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    t0 = time.monotonic()
    rec = slurm_cluster.wait_state(job, timeout=60)
    elapsed = time.monotonic() - t0
    text = log.read_text()
    assert rec["JobState"] == "FAILED", text[-3000:]
    assert elapsed < 20 + 15, f"job took {elapsed:.0f} s to fail after a rank died:\n{text[-3000:]}"
    assert re.search(r"task 1: Killed", text) and "training failed with exit code" in text, text[-3000:]
    assert rec["Restarts"] == "0", rec

    # Rerunning the same sbatch resumes from the newest committed checkpoint (then a plain scancel ends it).
    # (The log may miss the last commit: rank 0 can fail between writing the marker and logging it.)
    logged = [int(m) for m in re.findall(r"checkpoint step (\d+) committed", text)]
    ckpts = tmp_path / "runs" / "tiny-A" / "checkpoints"
    committed = sorted(int(p.parent.name.removeprefix("step-")) for p in ckpts.glob("step-*/COMMITTED"))
    assert logged and committed and committed[-1] >= logged[-1], (logged, committed)
    again = submit(
        slurm_cluster,
        "train_A.sh",
        tmp_path,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + " --set schedule.max_steps=500",
    )
    m = slurm_cluster.wait_in_log(
        tmp_path / f"vgg-A-{again}.out", r"resuming from step-(\d+)", timeout=180, job_id=again
    )
    slurm_cluster.run("scancel", again)
    assert int(m.group(1)) == committed[-1]
    slurm_cluster.wait_state(again, timeout=60)


def test_pipeline_runs_the_chain_and_a_failed_stage_cancels_its_dependants(
    slurm_cluster: SlurmCluster, shards: Path, tmp_path: Path
) -> None:
    def pipeline(where: Path, **env: str) -> list[str]:
        full = {**slurm_cluster.env, **job_env(where, **env)}
        p = subprocess.run(
            ["bash", str(REPO / "slurm" / "pipeline.sh"), *CPU_SHAPE],
            env=full,
            cwd=where,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert "squeue -j" in p.stdout and "tail -f" in p.stdout
        return p.stdout.strip().splitlines()[-1].removeprefix("JOBS ").split(",")

    ok_dir, bad_dir = tmp_path / "ok", tmp_path / "bad"
    ok_dir.mkdir(), bad_dir.mkdir()
    # A failing first stage: A cannot find its data, so D must be cancelled, not left pending forever.
    bad = pipeline(
        bad_dir,
        DIST_VGG_DATA=str(tmp_path / "missing"),
        DIST_VGG_PIPELINE_NETS="D",
        DIST_VGG_PIPELINE_STAGES="S256",
    )
    assert slurm_cluster.wait_state(bad[0], timeout=60)["JobState"] == "FAILED"
    rec = slurm_cluster.wait_state(bad[1], timeout=60)
    assert rec["JobState"] == "CANCELLED" and "Dependency" in rec.get("Reason", ""), rec

    ids = pipeline(
        ok_dir,
        DIST_VGG_DATA=str(shards),
        DIST_VGG_PIPELINE_NETS="D",
        DIST_VGG_PIPELINE_STAGES="S256",
        DIST_VGG_TRAIN_ARGS=TINY_TRAIN_ARGS + " --set schedule.max_steps=2",
    )
    assert len(ids) == 2
    assert slurm_cluster.job(ids[1])["Dependency"].startswith(f"afterok:{ids[0]}")
    for job in ids:
        rec = slurm_cluster.wait_state(job, timeout=240)
        assert rec["JobState"] == "COMPLETED", slurm_cluster.tail(job)
    log_d = (ok_dir / f"vgg-D-S256-{ids[1]}.out").read_text()
    assert "init-from-A → D" in log_d
    assert (ok_dir / "runs" / "tiny-D" / "final" / "COMMITTED").exists()


def test_pipeline_submits_the_paper_chain_with_dependencies(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """The full default chain (A; D and E at S256 → S384 → jitter), submitted held and inspected, not run."""
    p = subprocess.run(
        ["bash", str(REPO / "slurm" / "pipeline.sh"), *CPU_SHAPE, "--hold"],
        env={**slurm_cluster.env, **job_env(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    ids = p.stdout.strip().splitlines()[-1].removeprefix("JOBS ").split(",")
    try:
        jobs = [slurm_cluster.job(i) for i in ids]
        names = [j["JobName"] for j in jobs]
        assert names == [
            "vgg-A-S256",
            *("vgg-D-S256", "vgg-D-S384", "vgg-D-jitter"),
            *("vgg-E-S256", "vgg-E-S384", "vgg-E-jitter"),
        ]
        after = {j["JobName"]: j["Dependency"].split("(")[0] for j in jobs}
        assert after["vgg-A-S256"] in ("", "(null)")
        for net in "DE":
            assert after[f"vgg-{net}-S256"] == f"afterok:{ids[0]}"
            assert after[f"vgg-{net}-S384"] == f"afterok:{ids[names.index(f'vgg-{net}-S256')]}"
            assert after[f"vgg-{net}-jitter"] == f"afterok:{ids[names.index(f'vgg-{net}-S384')]}"
        assert all(f"{n} " in p.stdout or f"{n[4:]}" in p.stdout for n in names)
    finally:
        slurm_cluster.run("scancel", *ids, check=False)


def test_pipeline_refuses_a_fixed_recipe(tmp_path: Path) -> None:
    p = subprocess.run(
        ["bash", str(REPO / "slurm" / "pipeline.sh")],
        env={**os.environ, "DIST_VGG_RECIPE": "E-S256", "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "sbatch not found" in p.stderr:
        require_integration("sbatch not installed (apt-get install slurm-client)")
    assert p.returncode == 2 and "DIST_VGG_RECIPE is set, but the pipeline chooses it per stage" in p.stderr


def test_shard_imagenet_on_two_nodes_matches_a_single_process_run(
    slurm_cluster: SlurmCluster, synthetic_raw: Path, shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    job = submit(
        slurm_cluster,
        "shard_imagenet.sh",
        tmp_path,
        DIST_VGG_IMAGENET=str(synthetic_raw),
        DIST_VGG_DATA=str(out),
        DIST_VGG_PREP_ARGS=" ".join(PREP_ARGS),
    )
    rec = slurm_cluster.wait_state(job, timeout=180)
    text = Path(rec["StdOut"]).read_text()
    assert rec["JobState"] == "COMPLETED", text[-4000:]
    assert "data_prep[rank 1]" in text, "both MPI ranks must have worked"

    def dataset_files(root: Path) -> list[str]:
        # .prep/ is data_prep's run log, which may record rank and worker counts; everything else must match.
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".prep" not in p.parts
        )

    ours, ref = dataset_files(out), dataset_files(shards)
    assert ours == ref and any(name.endswith(".tar") for name in ours)
    _, mismatch, errors = filecmp.cmpfiles(out, shards, ours, shallow=False)
    assert not mismatch and not errors, f"differ from the single-process run: {mismatch} {errors}"
