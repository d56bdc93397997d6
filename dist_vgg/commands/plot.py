"""`dist-vgg plot RUN [--out PNG]`: one PNG of a run's training loss, accuracy (train and validation top-1/
top-5), learning rate and throughput against the step, read from RUN/metrics.jsonl."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder (holds metrics.jsonl)")
    p.add_argument("--out", type=Path, help="PNG path (default RUN/metrics.png)")


def read_events(path: Path) -> list[dict]:
    events = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(path.read_text().splitlines()):
                continue  # a line cut short by a kill: skip it
            raise ValueError(f"{path}:{n} is not JSON") from None
    return events


def run(args: argparse.Namespace) -> int:
    metrics = args.run / "metrics.jsonl"
    if not metrics.is_file():
        print(f"dist-vgg plot: {metrics} does not exist; is {args.run} a run folder?", file=sys.stderr)
        return 1
    try:
        events = read_events(metrics)
    except ValueError as e:
        print(f"dist-vgg plot: {e}", file=sys.stderr)
        return 1
    progress = [e for e in events if e["event"] == "progress"]
    val = [e for e in events if e["event"] == "validation"]
    if not progress:
        print(f"dist-vgg plot: {metrics} has no progress events yet", file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in progress]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    ax[0, 0].plot(steps, [e["loss"] for e in progress])
    ax[0, 0].set_title("training loss")
    ax[0, 1].plot(steps, [100 * (e["top1"] or 0) for e in progress], label="train top-1", alpha=0.6)
    if val:
        ax[0, 1].plot([e["step"] for e in val], [100 * e["top1"] for e in val], "o-", label="val top-1")
        ax[0, 1].plot([e["step"] for e in val], [100 * e["top5"] for e in val], "s-", label="val top-5")
    ax[0, 1].set_title("accuracy (%)")
    ax[0, 1].legend()
    ax[1, 0].semilogy(steps, [e["lr"] for e in progress])
    ax[1, 0].set_title("learning rate")
    ax[1, 1].plot(steps, [e["images_total"] and _ips(e) for e in progress])
    ax[1, 1].set_title("images/s (from step times)")
    for a in ax[1]:
        a.set_xlabel("optimiser step")
    fig.suptitle(str(args.run))
    fig.tight_layout()
    out = args.out or args.run / "metrics.png"
    fig.savefig(out, dpi=90)
    print(out)
    return 0


def _ips(e: dict) -> float:
    """Global images/s over the steps of one report: global batch = images per step."""
    mean = e.get("step_seconds_mean")
    batch = e["images_total"] / e["step"] if e["step"] else 0
    return batch / mean if mean else float("nan")
