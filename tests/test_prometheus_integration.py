"""End to end against a real Prometheus (Debian's binary on loopback, the shipped config with a 1 s scrape
interval): the real trainer (`dist-vgg train`, 2 ranks under torchrun) registers itself through file_sd with
its base port taken (so rank 0 moves and says so), Prometheus reads both ranks' throughput and loss, a live
scrape of a training rank and of data_prep passes `promtool check metrics`, every query of the shipped
Grafana dashboard returns data, and the training job's targets disappear when it ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dist_vgg.metrics.file_sd import Target, write_targets
from dist_vgg.metrics.gpu import GPU_METRICS, GpuCollector
from tests.metrics_fixtures import (
    ROOT,
    PromServer,
    dashboard_queries,
    free_port,
    grafana_to_promql,
    http_get,
    need,
    promtool_check_metrics,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _sample(text: str, name: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    return None


def _start_data_prep(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """`python -m data_prep synthetic` then `imagenet --metrics-port`, lingering so the test can scrape."""
    py = sys.executable
    script = (
        f"{py} -m data_prep synthetic {tmp_path / 'raw'} --classes 3 --train-per-class 6 --val-per-class 2 "
        f"--size small && exec {py} -m data_prep imagenet {tmp_path / 'raw'} --out {tmp_path / 'shards'} "
        f"--metrics-port {port} --metrics-addr 127.0.0.1 --metrics-linger 200"
    )
    with open(tmp_path / "data_prep.out", "w") as log:
        return subprocess.Popen(
            ["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )


def _check_dashboard(prom: PromServer, jobs: str) -> None:
    """Each dashboard query returns data for the jobs (GPU panels only where NVML sees a GPU: without one the
    exporter deliberately has no GPU series, and the query must still be valid PromQL)."""
    gpu = GpuCollector(0, {}).available
    for title, expr in dashboard_queries():
        promql = grafana_to_promql(expr, jobs)
        if not gpu and any(name in expr for name in GPU_METRICS):
            assert prom.query(promql) == [], (title, promql)
            continue
        wait_for(
            lambda promql=promql: prom.query(promql), 20, f"data for dashboard panel {title!r}: {promql}"
        )


def test_two_rank_training_and_data_prep_scraped_through_file_sd(tmp_path: Path) -> None:
    need("prometheus")
    sd_dir = tmp_path / "sd"
    sd_dir.mkdir()
    run_dir = tmp_path / "run-metrics"
    job = run_dir.name  # outside SLURM the run folder names the job
    prep_job, prep_port = "prep-1", free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("SLURM_JOB_ID", None)
    # data_prep serves metrics but publishes no targets file: register it by hand, as a one-off job would be.
    write_targets(
        sd_dir, prep_job, [Target("127.0.0.1", prep_port, {"job": prep_job, "rank": "0", "node": "local"})]
    )
    with PromServer(tmp_path / "prom", sd_dir) as prom, socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        base_port = blocker.getsockname()[1]  # rank 0's port is taken: it must move and say so
        prep = _start_data_prep(tmp_path, prep_port, env)
        with open(tmp_path / "train.out", "w") as log:
            train = subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                 "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                 "-m", "dist_vgg.cli", "train", "--recipe", "tiny-A", "--run-dir", str(run_dir),
                 "--set", "metrics.prometheus=on", "--set", f"metrics.sd_dir={sd_dir}",
                 "--set", "metrics.bind=127.0.0.1", "--set", f"metrics.port={base_port}",
                 # Far more steps than the test needs (it stops the job), at a learning rate that stays finite
                 # that long (tiny-A's 0.02 is tuned for its 4 epochs and diverges around step 140).
                 "--set", "schedule.max_epochs=5000", "--set", "optim.lr=0.002"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            )  # fmt: skip
        sd_file = sd_dir / f"dist-vgg-{job}.json"
        try:
            groups = wait_for(
                lambda: train.poll() is None and sd_file.exists() and json.loads(sd_file.read_text()),
                90,
                f"{sd_file} to list the training ranks",
            )
            by_rank = {g["labels"]["rank"]: g["targets"][0] for g in groups}
            assert sorted(by_rank) == ["0", "1"]
            assert groups[0]["labels"]["config"] == "A" and groups[0]["labels"]["job"] == job
            assert int(by_rank["0"].rsplit(":", 1)[1]) != base_port
            out = (tmp_path / "train.out").read_text()
            assert f"metrics port {base_port} on 127.0.0.1 is in use" in out, out[-3000:]
            assert f"exporting on free port {by_rank['0'].rsplit(':', 1)[1]} instead" in out
            assert f"metrics at http://{by_rank['0']}/metrics" in out
            assert f"http://{by_rank['1']}/metrics" in out  # rank 0 lists every rank's address

            # Live expositions pass Prometheus's linter: a training rank once it has reported progress, and
            # data_prep once it has written images.
            def scraped(url: str, name: str) -> str | None:
                try:
                    text = http_get(url)
                except OSError:
                    return None
                return text if (_sample(text, name) or 0) > 0 else None

            for url, name in (
                (f"http://{by_rank['1']}/metrics", "dist_vgg_steps_total"),
                (f"http://127.0.0.1:{prep_port}/metrics", "dist_vgg_prep_images_total"),
            ):
                text = wait_for(lambda url=url, name=name: scraped(url, name), 90, f"{name} > 0 at {url}")
                lint = promtool_check_metrics(text)
                assert lint.returncode == 0, f"{url}: {lint.stdout}{lint.stderr}"

            throughput = f'rate(dist_vgg_images_total{{job="{job}"}}[5s]) > 0'
            rates = wait_for(
                lambda: (r := prom.query(throughput)) and len(r) == 2 and r,
                60,
                "throughput of both training ranks in Prometheus",
            )
            assert sorted(x["metric"]["rank"] for x in rates) == ["0", "1"]
            # Each rank exports its share of the job's images: global batch 32 over 2 ranks is 16 per step on
            # each. (Comparing the two rates instead is flaky: each rank's window holds a different number of
            # progress reports.) Retried, since a scrape may land between a report's two counter updates.
            share = f'dist_vgg_images_total{{job="{job}"}} / dist_vgg_steps_total{{job="{job}"}}'
            wait_for(
                lambda: (r := prom.query(share)) and sorted(float(x["value"][1]) for x in r) == [16.0, 16.0],
                30,
                f"images per step of 16 on both ranks ({share})",
            )
            losses = prom.query(f'dist_vgg_loss{{job="{job}"}}')
            assert sorted(x["metric"]["rank"] for x in losses) == ["0", "1"]
            assert all(0 < float(x["value"][1]) < 10 for x in losses), losses
            ups = prom.query(f'up{{job="{job}"}} == 1')
            assert sorted(u["metric"]["rank"] for u in ups) == ["0", "1"]
            _check_dashboard(prom, f"{job}|{prep_job}")
        finally:
            _stop(train)
            _stop(prep)
        assert not sd_file.exists(), "the job's service-discovery file must be removed at its end"
        wait_for(lambda: not prom.targets(job), 30, f"job {job}'s targets to disappear from Prometheus")
        assert "SIGTERM: saved step" in (run_dir / "train.log").read_text()
