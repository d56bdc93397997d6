"""The one function that decides which ranks export Prometheus metrics, on which port, and how Prometheus finds
them. The trainer calls `build_sink` once per rank after `launch.init_process_group` (it gathers every rank's
address to rank 0, a collective) and reports its events to the sink it returns."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry

from dist_vgg.launch import LaunchEnv
from dist_vgg.metrics import MetricsSink, RunLabels
from dist_vgg.metrics.config import MetricsConfig
from dist_vgg.metrics.exporter import start_exporter_server
from dist_vgg.metrics.file_sd import Target, gather_targets, remove_stale, remove_targets, write_targets
from dist_vgg.metrics.gpu import GpuCollector, current_device
from dist_vgg.metrics.prometheus import PrometheusSink

TRAIN_LOGGER = "dist_vgg.train.metrics"
"""Default logger: a child of the trainer's `dist_vgg.train`, whose handlers write stderr and RUN/train.log,
so the exporter address and a moved port show up where users look."""

LOCAL_TARGETS_FILE = "prometheus-targets.json"
"""With no `metrics.sd_dir`, rank 0 still writes the job's targets into the run folder, for reference."""


def exports(cfg: MetricsConfig, launch: LaunchEnv) -> bool:
    """Every rank exports when `prometheus=on`, or under SLURM with `prometheus=auto`."""
    return cfg.prometheus == "on" or (cfg.prometheus == "auto" and launch.job_id is not None)


def advertised_host(cfg: MetricsConfig) -> str:
    """The host part of this rank's scrape address."""
    if cfg.advertise:
        return cfg.advertise
    if cfg.bind in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return cfg.bind


def build_sink(
    cfg: MetricsConfig,
    launch: LaunchEnv,
    labels: RunLabels,
    run_dir: Path,
    log: logging.Logger | None = None,
) -> MetricsSink:
    """Start this rank's exporter (when `exports`), publish the job's targets, and return the sink to report
    to. Must be called on every rank of the job. The returned sink's `close()` stops the exporter and (on rank
    0) removes the job's service-discovery file. Call `start(labels, restart_count)` on it before reporting.
    Messages go to `log` (default: the training log, see TRAIN_LOGGER)."""
    log = log or logging.getLogger(TRAIN_LOGGER)
    if not exports(cfg, launch):
        return MetricsSink()
    label_values = {
        "job": labels.job,
        "config": labels.config,
        "stage": labels.stage,
        "rank": str(labels.rank),
        "node": labels.node,
    }
    registry = CollectorRegistry()
    gpu = GpuCollector(current_device(launch.local_rank), label_values)
    if gpu.available:
        registry.register(gpu)
    server, thread = start_exporter_server(registry, cfg.port, launch.local_rank, cfg.bind, logger=log)
    own = Target(advertised_host(cfg), int(server.server_port), label_values)
    log.info("metrics at http://%s/metrics", own.address)

    def stop_server() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    on_close = [stop_server]  # run last-in first-out: the file goes before the server stops
    try:
        targets = gather_targets(own)
        if launch.is_main:
            publish(cfg, labels, targets, Path(run_dir), log, on_close)
    except BaseException:
        stop_server()
        raise
    return PrometheusSink(registry, world_size=launch.world_size, on_close=on_close)


def publish(
    cfg: MetricsConfig,
    labels: RunLabels,
    targets: list[Target],
    run_dir: Path,
    log: logging.Logger,
    on_close: list,
) -> None:
    """Rank 0: log every rank's address, clear stale files, write the job's targets file (and schedule its
    removal), or, with no `metrics.sd_dir`, leave the targets in the run folder for reference."""
    if len(targets) > 1:
        log.info(
            "metrics of all %d ranks: %s",
            len(targets),
            " ".join(f"http://{t.address}/metrics" for t in targets),
        )
    if not cfg.sd_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_targets(run_dir, labels.job, targets).replace(run_dir / LOCAL_TARGETS_FILE)
        return
    for stale in remove_stale(Path(cfg.sd_dir), labels.job):
        log.info("removed service-discovery file %s: SLURM no longer runs that job", stale)
    path = write_targets(Path(cfg.sd_dir), labels.job, targets)
    log.info("Prometheus targets of job %s (%d ranks) in %s", labels.job, len(targets), path)
    on_close.append(lambda: remove_targets(path))
