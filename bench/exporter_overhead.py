"""What exporting Prometheus metrics costs a training step: the time of one step's metric updates (the
PrometheusSink's `progress()` share per step, with a live exporter being scraped) against the time of one
tiny-A CPU training step (width 1/16, 32 px crop, batch 32 — the recipe the tests train).

Step times alone are too noisy on a shared machine to show a sub-percent cost, so the two are timed apart:
the sink is called with exactly what the trainer reports (one TrainProgress per log step carrying that many
step and data-wait durations) and its cost is divided by the steps it covers.

    .venv/bin/python bench/exporter_overhead.py [--log-every 50] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_vgg.launch import LaunchEnv
from dist_vgg.metrics import RunLabels, TrainProgress
from dist_vgg.metrics.config import MetricsConfig
from dist_vgg.metrics.setup import LOCAL_TARGETS_FILE, build_sink
from dist_vgg.models.vgg import build_vgg


def tiny_step_seconds(steps: int) -> float:
    """Median wall time of one SGD step of tiny-A on this CPU."""
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=5, width=1 / 16, crop=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def update_seconds_per_step(log_every: int, reports: int, run_dir: Path) -> float:
    """Median cost per training step of the sink's updates, while a scraper reads the exporter."""
    cfg = MetricsConfig(prometheus="on", port=0, bind="127.0.0.1")
    labels = RunLabels("bench", "A", "tiny", 0, "local")
    sink = build_sink(cfg, LaunchEnv("single"), labels, run_dir)
    sink.start(labels, 0)
    url = "http://" + __import__("json").loads((run_dir / LOCAL_TARGETS_FILE).read_text())[0]["targets"][0]
    stop = threading.Event()

    def scrape() -> None:  # a Prometheus scraping every 100 ms (15 s is usual): contention at its worst
        while not stop.is_set():
            urllib.request.urlopen(url + "/metrics", timeout=5).read()
            stop.wait(0.1)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    step_s, wait_s = [0.05] * log_every, [0.001] * log_every
    costs = []
    try:
        for r in range(1, reports + 1):
            event = TrainProgress(r * log_every, 0, r * log_every * 32, 1.5, 0.01, 0.3, step_s, wait_s)
            t = time.perf_counter()
            sink.progress(event)
            costs.append((time.perf_counter() - t) / log_every)
    finally:
        stop.set()
        scraper.join(timeout=10)
        sink.close()
    return statistics.median(costs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--log-every", type=int, default=50, help="steps per report (runtime.log_every; default 50)"
    )
    ap.add_argument("--reports", type=int, default=200, help="reports to time")
    ap.add_argument("--steps", type=int, default=20, help="tiny-A training steps to time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        per_step_logged = update_seconds_per_step(args.log_every, args.reports, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        every_step = update_seconds_per_step(1, args.reports, Path(tmp))
    step = tiny_step_seconds(args.steps)
    print(f"tiny-A CPU step (batch 32, 1 thread): {step * 1e3:.2f} ms (median of {args.steps})")
    print(f"metric updates per step, log_every={args.log_every}: {per_step_logged * 1e6:.2f} us "
          f"({100 * per_step_logged / step:.4f} % of a step)")  # fmt: skip
    print(f"metric updates per step, log_every=1 (worst case): {every_step * 1e6:.2f} us "
          f"({100 * every_step / step:.4f} % of a step)")  # fmt: skip
    print(
        f"RESULT exporter_overhead_per_step {per_step_logged * 1e6:.2f} us ratio={per_step_logged / step:.6f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
