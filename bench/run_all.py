"""`make bench`: run every CPU benchmark in bench/ and rewrite bench/RESULTS.md from what they printed.

Each script runs as its own subprocess with a timeout and ends by printing `RESULT <name> <value> <unit>
ratio=<value vs its reference>` lines, its reference being measured in the same run. A script that is missing,
fails, times out or prints no RESULT line is reported as such in RESULTS.md, never dropped. The GPU section of
RESULTS.md (between the GPU-SECTION markers) is kept by hand from `bench/gpu_check.sh` runs and is carried over
unchanged.

    .venv/bin/python bench/run_all.py                 # everything (~8 minutes on 2 busy cores)
    .venv/bin/python bench/run_all.py --only lrn_cost scaling_model
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS_MD = BENCH / "RESULTS.md"
GPU_BEGIN = (
    "<!-- GPU-SECTION-BEGIN: kept by hand from bench/gpu_check.sh runs; make bench never rewrites it -->"
)
GPU_END = "<!-- GPU-SECTION-END -->"
GPU_PLACEHOLDER_TEXT = (
    "No GPU figures recorded yet. On a GPU machine run `bash bench/gpu_check.sh`, then paste its table here "
    "with a `card:` line naming the GPU (`nvidia-smi --query-gpu=name --format=csv,noheader`) and the date."
)
RESULT_RE = re.compile(r"^RESULT\s+(\S+)\s+(\S+)\s+(\S+)\s+ratio=(\S+)(.*)$")


@dataclass(frozen=True)
class Bench:
    """One benchmark script: how to run it and what its ratio is measured against."""

    name: str
    """Script name in bench/ without `.py`."""
    timeout_s: int
    """Wall-clock limit on 2 cores; past it the script is killed and reported as timed out."""
    goal: str
    """What the ratio is compared with (the issue's goal), for the reader of RESULTS.md."""
    args: tuple[str, ...] = ()
    """Command-line arguments (smaller than the script's defaults where `make bench` must stay short)."""
    tail_lines: int = 25
    """How much of the script's output RESULTS.md shows."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment variables the script's docstring asks for."""

    @property
    def command(self) -> str:
        return " ".join(
            [*(f"{k}={v}" for k, v in self.env), ".venv/bin/python", f"bench/{self.name}.py", *self.args]
        )


BENCHES: tuple[Bench, ...] = (
    Bench("loader", 150, "DALI ≥ 1.25× and the non-DALI path ≥ 1.0× the reference loader"),
    Bench(
        "trainer_overhead", 240, "trainer step / bare PyTorch loop ≤ 1.05", env=(("OMP_NUM_THREADS", "1"),)
    ),
    Bench("data_prep", 120, "data_prep --fast within 1.5× of tar"),
    Bench("eval_cost", 120, "evaluation cost vs its reference (see the script)"),
    Bench("exporter_overhead", 60, "one step's metric updates well under 1 % of a tiny step"),
    Bench("lrn_cost", 120, "A-LRN / A: what LRN costs (paper: no accuracy gain)"),
    Bench(
        "decode_budget",
        120,
        "JPEG decode per core vs the 500×375 decode; cores per GPU for 5,500 img/s",
        ("--images", "3", "--min-s", "0.4"),
    ),
    Bench("allreduce", 45, "gloo loopback bus bandwidth / one-core memcpy"),
    Bench(
        "scaling_model",
        150,
        "2-rank CPU prediction error ≤ 25 % (ratio = error / 0.25 ≤ 1); 2×8 large batch ≥ 95 % (ratio = eff / 0.95)",
        tail_lines=60,
    ),
)


@dataclass
class Outcome:
    bench: Bench
    status: str
    """ok | missing | failed (rc N) | timed out | no RESULT line"""
    seconds: float = 0.0
    results: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    """(name, value, unit, ratio, trailing note) per RESULT line, in printed order."""
    tail: str = ""
    """The last lines of the script's output (its human-readable summary or its error)."""


def run_one(b: Bench, timeout_s: float, bench_dir: Path = BENCH) -> Outcome:
    script = bench_dir / f"{b.name}.py"
    if not script.exists():
        return Outcome(b, "missing", tail=f"bench/{b.name}.py does not exist (yet)")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **dict(b.env),
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *b.args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return Outcome(
            b, f"timed out after {timeout_s:.0f} s", time.perf_counter() - t0, _parse(out), _tail(out)
        )
    secs = time.perf_counter() - t0
    results = _parse(proc.stdout)
    if proc.returncode != 0:
        return Outcome(b, f"failed (rc {proc.returncode})", secs, results, _tail(proc.stdout + proc.stderr))
    if not results:
        return Outcome(b, "no RESULT line", secs, results, _tail(proc.stdout + proc.stderr))
    return Outcome(b, "ok", secs, results, _tail(proc.stdout))


def _parse(text: str) -> list[tuple[str, str, str, str, str]]:
    out = []
    for line in text.splitlines():
        m = RESULT_RE.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2), m.group(3), m.group(4), m.group(5).strip()))
    return out


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "not installed"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch": torch_v,
        "python": platform.python_version(),
        "load": load,
    }


def gpu_section(previous: str | None) -> str:
    """The hand-kept GPU block of the previous RESULTS.md, or a fresh one saying that none was recorded."""
    if previous and GPU_BEGIN in previous and GPU_END in previous:
        inner = previous.split(GPU_BEGIN, 1)[1].split(GPU_END, 1)[0]
        return GPU_BEGIN + inner + GPU_END
    return f"{GPU_BEGIN}\n{GPU_PLACEHOLDER_TEXT}\n{GPU_END}"


def render(
    outcomes: list[Outcome], info: dict[str, str], started: str, total_s: float, previous: str | None
) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Rewritten by `make bench` (`.venv/bin/python bench/run_all.py`); the GPU section below is kept by hand.",
        "Every ratio compares a figure with its reference measured in the same run (see each script's docstring).",
        "",
        f"- date: {started} UTC, {total_s:.0f} s in all",
        f"- machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, torch {info['torch']}",
        f"- load average at start: {info['load']} (a shared machine: other work competes for the cores)",
        "",
        "## CPU figures",
        "",
        "| script | figure | value | unit | ratio | goal / reference | status | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if not o.results:
            lines.append(
                f"| `{o.bench.name}` | — | — | — | — | {o.bench.goal} | **{o.status}** | {o.seconds:.0f} |"
            )
            continue
        for k, (name, value, unit, ratio, note) in enumerate(o.results):
            headline = " (headline)" if k == len(o.results) - 1 else ""
            extra = f" {note}" if note else ""
            goal = o.bench.goal if k == 0 else ""
            status = o.status if k == 0 else ""
            lines.append(
                f"| `{o.bench.name}` | `{name}`{headline} | {value} | {unit} | {ratio}{extra} | {goal} | {status} | "
                f"{o.seconds:.0f} |"
            )
    lines += data_rate_budget(outcomes)
    lines += ["", "## Commands and output", ""]
    for o in outcomes:
        lines += [
            f"### {o.bench.name} — {o.status}",
            "",
            f"`{o.bench.command}`",
            "",
            "```",
            o.tail,
            "```",
            "",
        ]
    lines += ["## GPU (one card; kept by hand)", "", gpu_section(previous), ""]
    return "\n".join(lines)


def _figure(outcomes: list[Outcome], name: str) -> float | None:
    for o in outcomes:
        for n, value, *_ in o.results:
            if n == name:
                try:
                    return float(value)
                except ValueError:
                    return None
    return None


def data_rate_budget(outcomes: list[Outcome]) -> list[str]:
    """The data-rate budget derived from this run's decode figures: CPU cores per GPU for the H100 goal."""
    goal = 5500.0
    xform = _figure(outcomes, "train_transform_per_core_500x375")
    dec = _figure(outcomes, "decode_simplejpeg_500x375")
    big = _figure(outcomes, "decode_simplejpeg_2000x1500")
    resized = _figure(outcomes, "decode_simplejpeg_resized512")
    lines = ["", "## Data-rate budget (derived from this run's figures)", ""]
    if xform is None or dec is None:
        return [*lines, "decode_budget produced no figures in this run: no budget derived.", ""]
    lines += [
        f"- JPEG decode on one core of this machine: {dec:.0f} img/s at 500×375 (a typical ImageNet image); the "
        f"whole CPU training transform (decode → rescale → crop → flip): {xform:.0f} img/s per core.",
        f"- VGG-16 on one H100 at the {goal:,.0f} img/s goal needs **{goal / xform:.0f} such cores per GPU** "
        f"for the CPU path ({8 * goal / xform:.0f} per 8-GPU node), before the trainer's own threads.",
    ]
    if big and resized:
        lines.append(
            f"- Shards of large originals (2000×1500) cost {dec / big:.0f}× a 500×375 decode; `data_prep "
            f"--resize-shorter 512` brings that to {dec / resized:.1f}× (decode {resized / big:.1f}× faster)."
        )
    cores = os.cpu_count() or 1
    for o in outcomes:
        for name, value, unit, *_ in o.results:
            if name.startswith("loader_") and unit == "img/s":
                rate = float(value)
                lines.append(
                    f"- `{name}` (the loader benchmark, whole pipeline, wall clock on this machine's {cores} shared "
                    f"cores): {rate:.0f} img/s, i.e. ≥ {rate / cores:.0f} img/s per core → at most "
                    f"{goal / (rate / cores):.0f} cores per GPU at that rate."
                )
    lines += [
        "- A node with fewer spare cores per GPU than that must decode on the GPU (`data.decode_device=gpu`: "
        "DALI's `mixed` nvJPEG / hardware decoder); a typical 8×H100 node has 96–112 cores, 12–14 per GPU.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (names without .py)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=900.0,
        help="overall wall-clock budget: a script starting late gets at most what is left (at least 30 s)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS_MD, help="where to write the markdown")
    ap.add_argument(
        "--bench-dir", type=Path, default=BENCH, help="where the scripts are (tests point it elsewhere)"
    )
    ap.add_argument("--timeout-s", type=float, help="one timeout for every script instead of each one's own")
    args = ap.parse_args(argv)
    benches = BENCHES
    if args.only:
        known = {b.name for b in BENCHES}
        unknown = sorted(set(args.only) - known)
        if unknown:
            ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        benches = tuple(b for b in BENCHES if b.name in args.only)

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    info = machine()
    t0 = time.perf_counter()
    outcomes = []
    for b in benches:
        left = args.budget_s - (time.perf_counter() - t0)
        timeout = args.timeout_s or max(30.0, min(b.timeout_s, left))
        print(f"[bench] {b.command} (timeout {timeout:.0f} s)", flush=True)
        o = run_one(b, timeout, args.bench_dir)
        outcomes.append(o)
        print(f"[bench]   {o.status} in {o.seconds:.0f} s", flush=True)
        for name, value, unit, ratio, note in o.results:
            print(f"          {name} {value} {unit} ratio={ratio} {note}".rstrip(), flush=True)
    total = time.perf_counter() - t0
    previous = args.out.read_text() if args.out.exists() else None
    args.out.write_text(render(outcomes, info, started, total, previous))
    print(f"[bench] wrote {args.out} ({total:.0f} s)")
    bad = [o.bench.name for o in outcomes if o.status != "ok"]
    if bad:
        print(f"[bench] not ok: {', '.join(bad)} (see {args.out.name})")
    return 1 if any(o.status not in ("ok", "missing") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
