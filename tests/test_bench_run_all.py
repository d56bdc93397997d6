"""bench/run_all.py (`make bench`) run as a user would, on stand-in scripts: every outcome (ok, failed, no RESULT
line, timed out, missing) lands in RESULTS.md by name, and the hand-kept GPU section survives the rewrite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_BLOCK = (
    "<!-- GPU-SECTION-BEGIN: kept by hand from bench/gpu_check.sh runs; make bench never rewrites it -->\n"
    "card: NVIDIA H100 80GB HBM3\nRESULT gpu_vgg16_train_bf16 5712 img/s ratio=1.04\n<!-- GPU-SECTION-END -->"
)


@pytest.mark.timeout(120)
def test_every_outcome_is_reported_and_the_gpu_section_is_kept(tmp_path: Path) -> None:
    (tmp_path / "loader.py").write_text(
        'print("decoded things")\nprint("RESULT loader_cpu 70.5 img/s ratio=1.10 goal>=1.0 met")\n'
    )
    (tmp_path / "data_prep.py").write_text('import sys\nprint("boom", file=sys.stderr)\nsys.exit(3)\n')
    (tmp_path / "eval_cost.py").write_text('print("forgot the result line")\n')
    (tmp_path / "exporter_overhead.py").write_text("import time\ntime.sleep(60)\n")
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# old results\n\n{GPU_BLOCK}\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run_all.py"),
            "--only",
            "loader",
            "data_prep",
            "eval_cost",
            "exporter_overhead",
            "trainer_overhead",
            "--bench-dir",
            str(tmp_path),
            "--out",
            str(out),
            "--timeout-s",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a failed script fails `make bench`
    md = out.read_text()
    assert "| `loader` | `loader_cpu` (headline) | 70.5 | img/s | 1.10 goal>=1.0 met |" in md
    assert "**failed (rc 3)**" in md and "boom" in md
    assert "**no RESULT line**" in md and "forgot the result line" in md
    assert "**timed out after 4 s**" in md
    assert "| `trainer_overhead` | — |" in md and "**missing**" in md
    assert GPU_BLOCK in md
    assert "# old results" not in md
    assert "torch" in md and "cores" in md  # the machine is named


def test_unknown_benchmark_name_is_refused_with_the_choices(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run_all.py"),
            "--only",
            "lodaer",
            "--out",
            str(tmp_path / "x.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) lodaer; choose from" in proc.stderr and "loader" in proc.stderr
    assert not (tmp_path / "x.md").exists()
