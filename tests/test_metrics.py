"""The Prometheus sink, the exporter's port choice, service-discovery files and the GPU collector, on the
real prometheus_client registry and HTTP server (no Prometheus server needed: see test_prometheus_*.py)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dist_vgg.launch import LaunchEnv
from dist_vgg.metrics import CheckpointEvent, MetricsSink, RunLabels, TrainProgress, ValidationResult
from dist_vgg.metrics.config import MetricsConfig
from dist_vgg.metrics.file_sd import (
    Target,
    remove_stale,
    slurm_job_state,
    target_file,
    write_targets,
)
from dist_vgg.metrics.gpu import GpuCollector
from dist_vgg.metrics.prometheus import LABELS, PrometheusSink
from dist_vgg.metrics.setup import LOCAL_TARGETS_FILE, advertised_host, build_sink, exports
from tests.metrics_fixtures import http_get, promtool_check_metrics

pytestmark = pytest.mark.timeout(60)

LABELS_A = RunLabels(job="123", config="D", stage="S256", rank=1, node="gpu7")


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    """name{sorted labels} → value, parsed back from the exposition text Prometheus would scrape."""
    from prometheus_client import generate_latest

    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[s.name + json.dumps(dict(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[str, float], name: str, **extra: str) -> float:
    labels = {"job": "123", "config": "D", "stage": "S256", "rank": "1", "node": "gpu7", **extra}
    return samples[name + json.dumps(dict(sorted(labels.items())))]


def _sink(world_size: int = 1) -> PrometheusSink:
    sink = PrometheusSink(CollectorRegistry(), world_size=world_size)
    sink.start(LABELS_A, restart_count=2)
    return sink


def test_series_names_units_and_labels() -> None:
    sink = _sink()
    sink.progress(TrainProgress(10, 0, 2560, 6.5, 0.01, 0.002, [0.5] * 10, [0.01] * 10, top5=0.01))
    sink.validation(ValidationResult(0, 10, 0.25, 0.5, 500))
    sink.checkpoint(CheckpointEvent(10, 1_700_000_000.0, 3.5, True))
    sink.checkpoint(CheckpointEvent(12, 1_700_000_100.0, 1.0, False))
    s = _samples(sink.registry)
    assert _value(s, "dist_vgg_images_total") == 2560
    assert _value(s, "dist_vgg_steps_total") == 10
    assert _value(s, "dist_vgg_loss") == 6.5
    assert _value(s, "dist_vgg_learning_rate") == 0.01
    assert _value(s, "dist_vgg_train_top1_ratio") == 0.002
    assert _value(s, "dist_vgg_train_top5_ratio") == 0.01
    assert _value(s, "dist_vgg_val_top1_ratio") == 0.25
    assert _value(s, "dist_vgg_val_top5_ratio") == 0.5
    assert _value(s, "dist_vgg_epoch") == 0
    assert _value(s, "dist_vgg_restarts") == 2
    assert _value(s, "dist_vgg_step_duration_seconds_count") == 10
    assert _value(s, "dist_vgg_step_duration_seconds_sum") == pytest.approx(5.0)
    assert _value(s, "dist_vgg_step_duration_seconds_bucket", le="0.5") == 10
    assert _value(s, "dist_vgg_step_duration_seconds_bucket", le="0.25") == 0
    assert _value(s, "dist_vgg_data_wait_seconds_sum") == pytest.approx(0.1)
    assert _value(s, "dist_vgg_last_checkpoint_timestamp_seconds") == 1_700_000_000.0
    assert _value(s, "dist_vgg_checkpoint_save_duration_seconds") == 3.5
    assert _value(s, "dist_vgg_checkpoints_total") == 1
    assert _value(s, "dist_vgg_checkpoint_failures_total") == 1
    names = {k.split("{")[0] for k in s}
    assert all(n.startswith("dist_vgg_") for n in names), names
    for key in s:
        labels = set(json.loads(key[key.index("{") :]))
        assert labels - {"le"} == set(LABELS), key  # the five bounded labels, nothing else


def test_gauges_without_a_value_are_absent_not_zero() -> None:
    """Before the first validation or checkpoint there is no accuracy or checkpoint time to show; a 0 would
    read as "accuracy 0 %" or "last saved in 1970" (and trip the stale-checkpoint alert)."""
    s = _samples(_sink().registry)
    names = {k.split("{")[0] for k in s}
    assert "dist_vgg_val_top1_ratio" not in names
    assert "dist_vgg_last_checkpoint_timestamp_seconds" not in names
    assert "dist_vgg_loss" not in names
    assert _value(s, "dist_vgg_images_total") == 0  # counters start at 0 so rate() has a first point


def test_images_are_the_ranks_share_and_a_resumed_run_does_not_spike() -> None:
    """The trainer reports the job's images (step x global batch); each of 4 ranks exports a quarter. A run
    resumed at step 1000 must not add the 1000 earlier steps to this process's counter in one go."""
    sink = _sink(world_size=4)
    sink.progress(TrainProgress(1010, 3, 1010 * 256, 2.0, 0.01, None, [0.1] * 10, [0.0] * 10))
    s = _samples(sink.registry)
    assert _value(s, "dist_vgg_steps_total") == 10
    assert _value(s, "dist_vgg_images_total") == pytest.approx(10 * 256 / 4)
    sink.progress(TrainProgress(1020, 3, 1020 * 256, 1.9, 0.01, None, [0.1] * 10, [0.0] * 10))
    s = _samples(sink.registry)
    assert _value(s, "dist_vgg_steps_total") == 20
    assert _value(s, "dist_vgg_images_total") == pytest.approx(20 * 256 / 4)


def test_non_finite_loss_is_exported_as_is() -> None:
    sink = _sink()
    sink.progress(TrainProgress(1, 0, 32, float("nan"), 0.01))
    assert math.isnan(_value(_samples(sink.registry), "dist_vgg_loss"))
    sink.progress(TrainProgress(2, 0, 64, float("inf"), 0.01))
    assert _value(_samples(sink.registry), "dist_vgg_loss") == math.inf


def test_checkpoint_interval_is_measured_between_saves() -> None:
    sink = _sink()
    sink.checkpoint(CheckpointEvent(100, 1_700_000_000.0, 2.0, True))
    sink.checkpoint(CheckpointEvent(200, 1_700_001_800.0, 2.0, True))
    assert _value(_samples(sink.registry), "dist_vgg_checkpoint_interval_seconds") == 1800.0


def test_event_before_start_is_refused_by_name() -> None:
    sink = PrometheusSink(CollectorRegistry())
    with pytest.raises(RuntimeError, match=r"before start\(labels, restart_count\)"):
        sink.progress(TrainProgress(1, 0, 32, 1.0, 0.01))


def test_which_ranks_export() -> None:
    local = LaunchEnv("torchrun", rank=1, world_size=2)
    slurm = LaunchEnv("slurm", rank=1, world_size=2, job_id="77")
    assert not exports(MetricsConfig(prometheus="auto"), local)
    assert exports(MetricsConfig(prometheus="auto"), slurm)
    assert exports(MetricsConfig(prometheus="on"), local)
    assert not exports(MetricsConfig(prometheus="off"), slurm)
    sink = build_sink(MetricsConfig(prometheus="auto"), local, LABELS_A, Path("unused"))
    assert type(sink) is MetricsSink  # nothing served, nothing written


def test_advertised_scrape_address() -> None:
    """Prometheus must be told a reachable name: never 0.0.0.0."""
    assert advertised_host(MetricsConfig(bind="127.0.0.1")) == "127.0.0.1"
    assert advertised_host(MetricsConfig(bind="0.0.0.0")) == socket.gethostname()
    assert advertised_host(MetricsConfig(bind="0.0.0.0", advertise="gpu7.ib.cluster")) == "gpu7.ib.cluster"


def test_bad_config_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"metrics.prometheus='yes' is not one of auto, on, off"):
        MetricsConfig(prometheus="yes")
    with pytest.raises(ValueError, match=r"metrics.port=70000 is not a TCP port"):
        MetricsConfig(port=70000)


def test_port_in_use_moves_to_a_free_port_and_logs_it(tmp_path: Path, caplog) -> None:
    """Two jobs (or two test "nodes") on one host: the second finds base + local rank taken."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        cfg = MetricsConfig(prometheus="on", port=taken, bind="127.0.0.1", sd_dir=str(tmp_path / "sd"))
        labels = RunLabels("local-run", "A", "tiny", 0, "n1")
        with caplog.at_level(logging.INFO, logger="dist_vgg.train.metrics"):
            sink = build_sink(cfg, LaunchEnv("single"), labels, tmp_path / "run")
        try:
            sink.start(labels, 0)
            (group,) = json.loads(target_file(tmp_path / "sd", "local-run").read_text())
            host, port = group["targets"][0].rsplit(":", 1)
            assert host == "127.0.0.1" and int(port) != taken
            assert f"metrics port {taken} on 127.0.0.1 is in use" in caplog.text
            assert f"exporting on free port {port} instead" in caplog.text
            assert f"metrics at http://127.0.0.1:{port}/metrics" in caplog.text
            assert "dist_vgg_restarts" in http_get(f"http://127.0.0.1:{port}/metrics")
        finally:
            sink.close()
    assert not target_file(tmp_path / "sd", "local-run").exists()  # removed at the end
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{port}/metrics", 2.0)  # and the exporter is stopped


def test_without_sd_dir_the_targets_land_in_the_run_folder(tmp_path: Path) -> None:
    cfg = MetricsConfig(prometheus="on", port=0, bind="127.0.0.1")
    labels = RunLabels("local-run", "A", "tiny", 0, "n1")
    sink = build_sink(cfg, LaunchEnv("single"), labels, tmp_path)
    try:
        (group,) = json.loads((tmp_path / LOCAL_TARGETS_FILE).read_text())
        assert group["labels"] == {
            "job": "local-run",
            "config": "A",
            "stage": "tiny",
            "rank": "0",
            "node": "n1",
        }
    finally:
        sink.close()


def test_live_scrape_passes_promtool(tmp_path: Path) -> None:
    cfg = MetricsConfig(prometheus="on", port=0, bind="127.0.0.1")
    sink = build_sink(cfg, LaunchEnv("single"), LABELS_A, tmp_path)
    try:
        sink.start(LABELS_A, 0)
        sink.progress(TrainProgress(10, 0, 2560, 6.5, 0.01, 0.002, [0.5] * 10, [0.01] * 10))
        sink.validation(ValidationResult(0, 10, 0.25, 0.5, 500))
        sink.checkpoint(CheckpointEvent(10, 1_700_000_000.0, 3.5, True))
        (group,) = json.loads((tmp_path / LOCAL_TARGETS_FILE).read_text())
        lint = promtool_check_metrics(http_get(f"http://{group['targets'][0]}/metrics"))
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        sink.close()


def test_targets_file_is_written_atomically_and_readable(tmp_path: Path) -> None:
    targets = [Target("n1", 9400, {"rank": "0"}), Target("n2", 9401, {"rank": "1"}), Target("::1", 9402, {})]
    path = write_targets(tmp_path, "55", targets)
    assert path.name == "dist-vgg-55.json"
    doc = json.loads(path.read_text())
    assert [g["targets"] for g in doc] == [["n1:9400"], ["n2:9401"], ["[::1]:9402"]]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # Prometheus may run as another user
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist-vgg-55.json"]  # no temp file left


def test_unwritable_sd_dir_says_which_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"cannot create metrics.sd_dir .*set metrics.sd_dir"):
        write_targets(blocker / "sd", "55", [])


def test_stale_files_are_kept_when_slurm_cannot_answer(tmp_path: Path, monkeypatch) -> None:
    """Without scontrol (laptop) or with no reachable controller nothing can prove a job finished, so its
    file stays; files of non-SLURM runs are never candidates."""
    for job in ("101", "local-run"):
        write_targets(tmp_path, job, [])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert slurm_job_state("101") is None
    assert remove_stale(tmp_path, own_job="202") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist-vgg-101.json", "dist-vgg-local-run.json"]


def test_no_gpu_means_no_gpu_series_and_no_error() -> None:
    """This machine has no NVIDIA driver: the collector reports unavailable and yields nothing."""
    collector = GpuCollector(0, {"rank": "0"})
    if collector.available:
        pytest.skip("an NVIDIA GPU is visible here; bench/gpu_check.sh covers the GPU series")
    assert list(collector.collect()) == []
