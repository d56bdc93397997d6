"""Service-discovery clean-up against a real SLURM cluster (cluster/local/up.sh): a job's start removes the
target files of jobs SLURM reports finished or no longer knows, and keeps those of running jobs and of runs
outside SLURM."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dist_vgg.metrics.file_sd import Target, remove_stale, slurm_job_state, write_targets
from tests.integration import require_integration
from tests.slurm_cluster import SlurmCluster, slurm_missing, start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    why = slurm_missing()
    if why:
        require_integration(why)
    # munged runs as user munge: its state folder must be reachable through world-traversable parents.
    base = Path(tempfile.mkdtemp(prefix="dist-vgg-metrics-slurm."))
    base.chmod(0o755)
    try:
        yield from start_cluster(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stale_target_files_of_finished_and_unknown_jobs_are_removed(
    cluster: SlurmCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in cluster.env.items():
        if key.startswith("SLURM_CONF") or key == "PATH":
            monkeypatch.setenv(key, value)
    quick, long = tmp_path / "quick.sh", tmp_path / "long.sh"
    quick.write_text("#!/bin/bash\ntrue\n")
    long.write_text("#!/bin/bash\nsleep 120\n")
    out = ["--output", str(tmp_path / "%j.out")]
    finished = cluster.sbatch(quick, *out)
    running = None
    try:
        cluster.wait_state(finished, timeout=60)
        running = cluster.sbatch(long, *out)
        cluster.wait_state(running, {"RUNNING"}, timeout=60)
        sd = tmp_path / "sd"
        for job in (finished, running, "999999", "local-run"):
            write_targets(sd, job, [Target("n1", 9400, {"job": job, "rank": "0"})])
        assert slurm_job_state("999999") == "UNKNOWN"
        assert slurm_job_state(running) == "RUNNING"
        removed = remove_stale(sd, own_job="1")
        assert sorted(p.name for p in removed) == sorted(
            [f"dist-vgg-{finished}.json", "dist-vgg-999999.json"]
        )
        assert sorted(p.name for p in sd.iterdir()) == sorted(
            [f"dist-vgg-{running}.json", "dist-vgg-local-run.json"]
        )
    finally:
        if running:
            cluster.run("scancel", running, check=False)
