"""Two file-side sinks of the trainer: a JSON-lines file (RUN/metrics.jsonl, read by `dist-vgg plot`) and
human log lines (RUN/train.log). Both run on rank 0 only; Prometheus is a separate sink."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from dist_vgg.metrics import CheckpointEvent, MetricsSink, RunLabels, TrainProgress, ValidationResult


class JsonlSink(MetricsSink):
    """One JSON object per event, appended and flushed (a resumed run appends to the same file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def _write(self, kind: str, payload: dict) -> None:
        self._f.write(json.dumps({"event": kind, "time": time.time(), **payload}) + "\n")

    def start(self, labels: RunLabels, restart_count: int) -> None:
        self._write("start", {**asdict(labels), "restart_count": restart_count})

    def progress(self, event: TrainProgress) -> None:
        d = asdict(event)
        steps = d.pop("step_seconds")
        waits = d.pop("data_wait_seconds")
        d["steps_timed"] = len(steps)
        d["step_seconds_mean"] = sum(steps) / len(steps) if steps else None
        d["data_wait_seconds_mean"] = sum(waits) / len(waits) if waits else None
        self._write("progress", d)

    def validation(self, event: ValidationResult) -> None:
        self._write("validation", asdict(event))

    def checkpoint(self, event: CheckpointEvent) -> None:
        self._write("checkpoint", asdict(event))

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class LogLineSink(MetricsSink):
    """The progress line every N steps: epoch, step, loss, train top-1, lr, global img/s, data-wait %, ETA."""

    def __init__(
        self, logger: logging.Logger, global_batch: int, steps_per_epoch: int, total_steps: int
    ) -> None:
        self.log = logger
        self.global_batch, self.steps_per_epoch, self.total_steps = global_batch, steps_per_epoch, total_steps

    def progress(self, e: TrainProgress) -> None:
        busy = sum(e.step_seconds)
        n = len(e.step_seconds)
        ips = self.global_batch * n / busy if busy > 0 else float("nan")
        wait = 100.0 * sum(e.data_wait_seconds) / busy if busy > 0 else 0.0
        eta = format_duration((self.total_steps - e.step) * busy / n) if n and busy > 0 else "?"
        top1 = f" top1 {100 * e.top1:5.1f}%" if e.top1 is not None else ""
        self.log.info(
            f"epoch {e.epoch} step {e.step} ({e.step - e.epoch * self.steps_per_epoch}/{self.steps_per_epoch}) "
            f"loss {e.loss:.4f}{top1} lr {e.lr:.2e} img/s {ips:.1f} data-wait {wait:.1f}% eta {eta}"
        )

    def validation(self, e: ValidationResult) -> None:
        self.log.info(
            f"validation epoch {e.epoch} step {e.step}: top-1 {100 * e.top1:.2f}% top-5 {100 * e.top5:.2f}% "
            f"({e.images} images; error {100 * (1 - e.top1):.2f} / {100 * (1 - e.top5):.2f})"
        )

    def checkpoint(self, e: CheckpointEvent) -> None:
        self.log.info(f"checkpoint step {e.step} committed in {e.duration_s:.2f}s")
