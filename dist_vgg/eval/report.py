"""Results as the paper prints them (Tables 3–6: configuration, train S, test Q, top-1 / top-5 error), plus the
protocol and the number of images, as a text table, JSON and CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dist_vgg.eval.ensemble import Combined

COLUMNS = ("configuration", "train S", "test Q", "mode", "flip", "top-1 err %", "top-5 err %", "images")


@dataclass(frozen=True)
class Row:
    configuration: str
    train_scale: str
    test_scales: str
    mode: str
    flip: bool
    top1_err: float
    """Percent."""
    top5_err: float
    """Percent."""
    images: int
    top1_correct: int
    top5_correct: int


def rows_from(results: list[Combined], names: list[str], train_scales: list[str], flip: bool) -> list[Row]:
    """`names[i]` / `train_scales[i]` describe network i (e.g. 'D', '256-512')."""
    rows = []
    for r in results:
        ensemble = len(r.members) > 1
        rows.append(
            Row(
                configuration=("ensemble " + "+".join(names[m] for m in r.members))
                if ensemble
                else names[r.members[0]],
                train_scale=",".join(train_scales[m] for m in r.members),
                test_scales=",".join(map(str, r.scales)),
                mode="+".join(r.modes),
                flip=flip,
                top1_err=100.0 * r.accuracy.top1_err,
                top5_err=100.0 * r.accuracy.top5_err,
                images=r.accuracy.images,
                top1_correct=r.accuracy.top1_correct,
                top5_correct=r.accuracy.top5_correct,
            )
        )
    return rows


def _cells(r: Row) -> tuple[str, ...]:
    return (
        r.configuration,
        r.train_scale,
        r.test_scales,
        r.mode,
        "yes" if r.flip else "no",
        f"{r.top1_err:.2f}",
        f"{r.top5_err:.2f}",
        str(r.images),
    )


def format_table(rows: list[Row]) -> str:
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, rows: list[Row], meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, "results": [asdict(r) for r in rows]}, indent=1) + "\n")


def write_csv(path: str | Path, rows: list[Row]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0]).keys()) if rows else list(Row.__annotations__))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
