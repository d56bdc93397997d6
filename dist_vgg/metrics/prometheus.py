"""The Prometheus sink: turns the loop's events into `dist_vgg_*` series on this process's own registry.

Names follow Prometheus conventions (base units in the name, `_total` on counters, histograms for durations);
every series carries exactly the bounded labels of `RunLabels` (job, config, stage, rank, node). Updates only
touch host floats the loop already has, at its log steps, so exporting adds no host sync to a training step.
"""

from __future__ import annotations

import math
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dist_vgg.metrics import CheckpointEvent, MetricsSink, RunLabels, TrainProgress, ValidationResult

LABELS = ("job", "config", "stage", "rank", "node")
"""The only label names a dist-vgg series carries; all have a bounded set of values per cluster."""

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Step times run from milliseconds (tiny CPU tests) to seconds (VGG-E on one GPU)."""
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Data waits are near zero when the loader keeps up; the upper buckets show a starving loop."""


class PrometheusSink(MetricsSink):
    """Holds the metric objects of one rank. `start()` binds the labels; events before it are an error."""

    def __init__(
        self, registry: CollectorRegistry, world_size: int = 1, on_close: list | None = None
    ) -> None:
        """`world_size`: the trainer reports `images_total` for the whole job (step x global batch); each rank
        exports its share, so that summing `dist_vgg_images_total` over ranks gives the job's throughput."""
        self.registry = registry
        self.world_size = max(1, world_size)
        self._on_close = list(on_close or [])
        r = registry
        self.images = Counter("dist_vgg_images", "Training images processed by this rank", LABELS, registry=r)
        self.steps = Counter("dist_vgg_steps", "Optimizer steps taken by this rank", LABELS, registry=r)
        self.step_gauge = Gauge("dist_vgg_step", "Global step of the latest report", LABELS, registry=r)
        self.epoch = Gauge("dist_vgg_epoch", "Epoch of the latest report (0-based)", LABELS, registry=r)
        self.loss = Gauge("dist_vgg_loss", "Training loss at the latest log step", LABELS, registry=r)
        self.lr = Gauge("dist_vgg_learning_rate", "Learning rate at the latest log step", LABELS, registry=r)
        self.train_top1 = Gauge(
            "dist_vgg_train_top1_ratio",
            "Training top-1 accuracy (0-1) at the latest log step",
            LABELS,
            registry=r,
        )
        self.train_top5 = Gauge(
            "dist_vgg_train_top5_ratio",
            "Training top-5 accuracy (0-1) at the latest log step",
            LABELS,
            registry=r,
        )
        self.val_top1 = Gauge(
            "dist_vgg_val_top1_ratio", "Validation top-1 accuracy (0-1)", LABELS, registry=r
        )
        self.val_top5 = Gauge(
            "dist_vgg_val_top5_ratio", "Validation top-5 accuracy (0-1)", LABELS, registry=r
        )
        self.val_images = Gauge(
            "dist_vgg_val_images", "Images in the latest validation pass", LABELS, registry=r
        )
        self.step_time = Histogram(
            "dist_vgg_step_duration_seconds", "Wall time of one training step", LABELS, buckets=STEP_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.data_wait = Histogram(
            "dist_vgg_data_wait_seconds", "Time a step waited for its batch", LABELS, buckets=WAIT_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.ckpt_time = Gauge(
            "dist_vgg_last_checkpoint_timestamp_seconds", "Unix time of the last successful checkpoint", LABELS,
            registry=r,
        )  # fmt: skip
        self.ckpt_duration = Gauge(
            "dist_vgg_checkpoint_save_duration_seconds",
            "Duration of the last checkpoint save",
            LABELS,
            registry=r,
        )
        self.ckpt_interval = Gauge(
            "dist_vgg_checkpoint_interval_seconds",
            "Seconds between the last two successful checkpoints (the first: since this process started)",
            LABELS,
            registry=r,
        )
        self.ckpts = Counter("dist_vgg_checkpoints", "Successful checkpoint saves", LABELS, registry=r)
        self.ckpt_failures = Counter(
            "dist_vgg_checkpoint_failures", "Checkpoint saves that failed", LABELS, registry=r
        )
        self.restarts = Gauge(
            "dist_vgg_restarts",
            "Times the scheduler restarted this job (SLURM_RESTART_COUNT)",
            LABELS,
            registry=r,
        )
        self.started = Gauge(
            "dist_vgg_start_time_seconds", "Unix time this training process started", LABELS, registry=r
        )
        self._values: dict[str, str] = {}
        self._children: dict[str, object] | None = None
        self._last_step: int | None = None
        self._last_images: int | None = None
        self._last_ckpt_time: float | None = None

    def start(self, labels: RunLabels, restart_count: int) -> None:
        self._values = {
            "job": labels.job,
            "config": labels.config,
            "stage": labels.stage,
            "rank": str(labels.rank),
            "node": labels.node,
        }
        self._children = {}
        now = time.time()
        # Counters start at 0 so rate() has a first point; gauges such as validation accuracy or the last
        # checkpoint time appear only once they have a value (a 0 would read as "accuracy 0", "saved in 1970").
        for name in ("images", "steps", "ckpts", "ckpt_failures"):
            self._child(name).inc(0)
        self._child("restarts").set(restart_count)
        self._child("started").set(now)
        self._last_ckpt_time = now

    def _child(self, name: str):
        """The labelled series `name` of this rank, bound once (an update is then a dict lookup and an add)."""
        if self._children is None:
            raise RuntimeError("PrometheusSink received an event before start(labels, restart_count)")
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = getattr(self, name).labels(**self._values)
        return child

    def progress(self, event: TrainProgress) -> None:
        if self._last_step is None:
            # First report of this process: a resumed run's totals include work done before the restart, so
            # count only the steps in this report (at the run's average images per step) to keep rate() honest.
            steps = len(event.step_seconds) if event.step_seconds else 0
            steps = min(steps, event.step)
            images = round(event.images_total * steps / event.step) if event.step > 0 else 0
        else:
            steps = max(0, event.step - self._last_step)
            images = max(0, event.images_total - (self._last_images or 0))
        self._last_step, self._last_images = event.step, event.images_total
        self._child("steps").inc(steps)
        self._child("images").inc(images / self.world_size)
        self._child("step_gauge").set(event.step)
        self._child("epoch").set(event.epoch)
        # NaN/inf are exported as they are: the DistVggLossNotFinite alert needs to see them.
        self._child("loss").set(event.loss)
        self._child("lr").set(event.lr)
        if event.top1 is not None:
            self._child("train_top1").set(event.top1)
        if event.top5 is not None:
            self._child("train_top5").set(event.top5)
        step_time, data_wait = self._child("step_time"), self._child("data_wait")
        for s in event.step_seconds:
            step_time.observe(s)
        for w in event.data_wait_seconds:
            data_wait.observe(w)

    def validation(self, event: ValidationResult) -> None:
        self._child("val_top1").set(event.top1)
        self._child("val_top5").set(event.top5)
        self._child("val_images").set(event.images)

    def checkpoint(self, event: CheckpointEvent) -> None:
        if not event.ok:
            self._child("ckpt_failures").inc()
            return
        self._child("ckpts").inc()
        self._child("ckpt_duration").set(event.duration_s)
        if self._last_ckpt_time is not None and math.isfinite(event.unix_time):
            self._child("ckpt_interval").set(max(0.0, event.unix_time - self._last_ckpt_time))
        self._child("ckpt_time").set(event.unix_time)
        self._last_ckpt_time = event.unix_time

    def close(self) -> None:
        while self._on_close:
            self._on_close.pop()()
