"""data_prep throughput on a synthetic ImageNet-sized-image set (shorter side 150–500):
- the `--fast` copy-through path (header/marker check, copy JPEG bytes, shard, hash) against plain `tar -cf` of
  the same files (goal: at most 1.5× tar's time);
- the default full-decode check, per core;
- 1 vs 2 workers (fast path and full check).
The last line is the 1-worker fast path's time over tar's; its ratio is that over the 1.5× goal (≤ 1 meets it).
Times are of the conversion itself (in-process, no interpreter start-up), median of REPEATS runs.
Usage: python bench/data_prep.py [--classes 10 --per-class 80]"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import imagenet, synthetic
from data_prep.parallel import Team
from data_prep.progress import PrepMetrics

REPEATS = 3


def timed(fn, before=None) -> float:
    times = []
    for _ in range(REPEATS):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def convert(raw: Path, out: Path, fast: bool, workers: int) -> None:
    team = Team(0, 1, 0, workers)
    imagenet.run(
        str(raw),
        str(out),
        imagenet.PrepOptions(shard_samples=64, fast=fast),
        team,
        strict=False,
        overwrite=False,
        metrics=PrepMetrics(0),
    )
    team.close()


def clear(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=80)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw"
        synthetic.generate(
            raw, synthetic.SynthSpec(args.classes, args.per_class, 2, size="imagenet"), workers=2
        )
        n = sum(1 for p in raw.rglob("*.JPEG"))
        mb = sum(p.stat().st_size for p in raw.rglob("*.JPEG")) / 1e6
        subprocess.run(["tar", "-cf", str(tmp / "warm.tar"), "-C", str(raw), "train", "val"], check=True)
        t_tar = timed(
            lambda: subprocess.run(
                ["tar", "-cf", str(tmp / "plain.tar"), "-C", str(raw), "train", "val"], check=True
            ),
            lambda: (tmp / "plain.tar").unlink(missing_ok=True),
        )
        import contextlib
        import io

        quiet = contextlib.redirect_stderr(io.StringIO())
        with quiet:
            t_fast = timed(lambda: convert(raw, tmp / "fast", True, 1), lambda: clear(tmp / "fast"))
            t_fast2 = timed(lambda: convert(raw, tmp / "fast2", True, 2), lambda: clear(tmp / "fast2"))
            t_full1 = timed(lambda: convert(raw, tmp / "full1", False, 1), lambda: clear(tmp / "full1"))
            t_full2 = timed(lambda: convert(raw, tmp / "full2", False, 2), lambda: clear(tmp / "full2"))
    print(
        f"{n} images, {mb:.1f} MB; median of {REPEATS}: tar {t_tar:.3f}s, fast {t_fast:.3f}s, "
        f"fast 2 workers {t_fast2:.3f}s, full 1 worker {t_full1:.3f}s, full 2 workers {t_full2:.3f}s"
    )
    print(f"RESULT data_prep_fast_images_per_s {n / t_fast:.0f} img/s ratio={t_tar / t_fast:.2f}")
    print(f"RESULT data_prep_fast_2_workers_vs_tar {t_fast2 / t_tar:.2f} x ratio={t_fast2 / t_tar / 1.5:.2f}")
    print(f"RESULT data_prep_full_check_per_core {n / t_full1:.0f} img/s ratio={t_fast / t_full1:.2f}")
    print(f"RESULT data_prep_full_2_workers {n / t_full2:.0f} img/s ratio={t_full1 / t_full2:.2f}")
    print(f"RESULT data_prep_fast_vs_tar {t_fast / t_tar:.2f} x ratio={t_fast / t_tar / 1.5:.2f}")


if __name__ == "__main__":
    main()
