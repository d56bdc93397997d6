"""Metrics: the events the training loop reports, and the sinks that receive them (log lines, JSON lines,
Prometheus). The loop only calls a `MetricsSink`; exporter details stay inside the sinks.

Events carry values that are already on the host: the loop reads device values (loss, step times) only at its
log steps, so reporting adds no host sync to the training step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunLabels:
    """Bounded labels every series of a run carries."""

    job: str
    config: str
    stage: str
    rank: int
    node: str


@dataclass(frozen=True)
class TrainProgress:
    """Reported at each log step: totals so far, the latest host-side values, and the per-step durations
    (seconds) measured since the previous report."""

    step: int
    epoch: int
    images_total: int
    loss: float
    lr: float
    top1: float | None = None
    step_seconds: list[float] = field(default_factory=list)
    data_wait_seconds: list[float] = field(default_factory=list)
    top5: float | None = None
    """Training top-5 (0-1) over the batches since the previous report, when the loop measures it."""


@dataclass(frozen=True)
class ValidationResult:
    epoch: int
    step: int
    top1: float
    top5: float
    images: int


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    unix_time: float
    duration_s: float
    ok: bool


class MetricsSink:
    """Base sink: every hook is a no-op, so a sink implements only what it needs."""

    def start(self, labels: RunLabels, restart_count: int) -> None:
        pass

    def progress(self, event: TrainProgress) -> None:
        pass

    def validation(self, event: ValidationResult) -> None:
        pass

    def checkpoint(self, event: CheckpointEvent) -> None:
        pass

    def close(self) -> None:
        pass


class MultiSink(MetricsSink):
    """Fans every event out to several sinks."""

    def __init__(self, sinks: list[MetricsSink]) -> None:
        self.sinks = sinks

    def start(self, labels: RunLabels, restart_count: int) -> None:
        for s in self.sinks:
            s.start(labels, restart_count)

    def progress(self, event: TrainProgress) -> None:
        for s in self.sinks:
            s.progress(event)

    def validation(self, event: ValidationResult) -> None:
        for s in self.sinks:
            s.validation(event)

    def checkpoint(self, event: CheckpointEvent) -> None:
        for s in self.sinks:
            s.checkpoint(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
