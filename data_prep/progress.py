"""Progress a person can read in a terminal or a log file (plain lines on stderr, at most one every few
seconds), and the same counts for Prometheus (`--metrics-port`): counters named `dist_vgg_prep_*`, labelled by
rank only (bounded)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from dist_vgg.metrics.exporter import start_exporter


class PrepMetrics:
    """data_prep's Prometheus series on a private registry (so tests and other code do not collide)."""

    def __init__(self, rank: int):
        self.registry = CollectorRegistry()
        labels = ["rank"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry).labels(rank=str(rank))

        self.checked = counter(
            "dist_vgg_prep_checked_images", "Input files checked (decoded or header-checked)."
        )
        self.images = counter("dist_vgg_prep_images", "Images written into shards.")
        self.bytes = counter("dist_vgg_prep_bytes", "Shard bytes written (or kept from a previous run).")
        self.shards = counter("dist_vgg_prep_shards", "Shards completed (written or kept).")
        self.reencoded = counter("dist_vgg_prep_reencoded_images", "Images stored re-encoded.")
        self.quarantined = counter("dist_vgg_prep_quarantined_images", "Input files left out as unusable.")
        self.planned = Gauge(
            "dist_vgg_prep_planned_shards", "Shards this rank has to produce.", labels, registry=self.registry
        ).labels(rank=str(rank))

    def serve(self, port: int, local_rank: int, addr: str = "0.0.0.0") -> int:
        return start_exporter(self.registry, port, local_rank, addr)


@dataclass
class Progress:
    """One phase's progress line: `data_prep[rank 0] write: 12/40 shards, 1,200 images, 130.2 MB, 350 img/s`."""

    phase: str
    total: int
    unit: str
    rank: int = 0
    every_s: float = 2.0
    done: int = 0
    images: int = 0
    bytes: int = 0
    start: float = field(default_factory=time.monotonic)
    last: float = 0.0

    def add(self, units: int, images: int = 0, nbytes: int = 0) -> None:
        self.done += units
        self.images += images
        self.bytes += nbytes
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.print()

    def print(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.images / elapsed
        eta = (self.total - self.done) * elapsed / self.done if self.done else 0.0
        line = (
            f"data_prep[rank {self.rank}] {self.phase}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%)"
        )
        if self.images:
            line += f", {self.images:,} images, {human_bytes(self.bytes)}, {rate:,.0f} img/s"
        if self.done < self.total:
            line += f", eta {eta:.0f}s"
        print(line, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"
