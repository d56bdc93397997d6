"""The paper's staged flow on the tiny recipe, all through the CLI: A trains from random weights; D starts
from A (init-from-A, transfer report in the log) and D from the paper's random init trains for the same short
budget with the same seed; both validation curves are recorded (printed and written next to the runs) without
asserting which one wins; the S=384 stage warm-starts from the S=256 run."""

from __future__ import annotations

import json

import pytest

from dist_vgg.cli import main
from tests.train_fixtures import log_text, run

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

D_BUDGET = ["--set", "schedule.max_epochs=4"]


def val_curve(run_dir) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [round(e["top1"], 4) for e in events if e["event"] == "validation"]


def test_staged_flow_a_then_d_from_a_vs_random_then_s384(tmp_path):
    a, d_from_a, d_random, a384 = (tmp_path / n for n in ("A", "D-from-A", "D-random", "A-S384"))
    logs = tmp_path / "logs"
    assert run(["--recipe", "tiny-A", "--run-dir", str(a)], 1, logs) == [0]
    curve_a = val_curve(a)
    assert len(curve_a) == 10
    assert curve_a[-1] > 0.35, f"tiny A did not learn above chance (0.2): {curve_a}"
    assert main(["plot", str(a), "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a D recipe that expects A refuses to start from random weights silently
    assert main(["train", "--recipe", "tiny-D", "--run-dir", str(tmp_path / "no-source")]) == 1
    assert "--init-from" in log_text(tmp_path / "no-source")

    assert run(
        ["--recipe", "tiny-D", "--init-from", str(a), "--run-dir", str(d_from_a), *D_BUDGET], 1, logs
    ) == [0]
    assert run(["--recipe", "tiny-D-random", "--run-dir", str(d_random), *D_BUDGET], 1, logs) == [0]
    text = log_text(d_from_a)
    assert "init-from-A → D (mapping 'paper'" in text
    assert text.count("  copied  ") == 7 and "  fresh   features.2" in text
    curves = {
        "A": curve_a,
        "D from A": val_curve(d_from_a),
        "D random (width-corrected init)": val_curve(d_random),
    }
    assert len(curves["D from A"]) == len(curves["D random (width-corrected init)"]) == 4
    (tmp_path / "curves.json").write_text(json.dumps(curves, indent=1))
    print("\nvalidation top-1 per epoch (tiny recipes, synthetic learnable data):")
    for name, curve in curves.items():
        print(f"  {name:<24} {curve}")

    s384 = [
        "--recipe",
        "tiny-A-S384",
        "--init-from",
        str(a),
        "--run-dir",
        str(a384),
        "--set",
        "schedule.max_epochs=1",
    ]
    assert run(s384, 1, logs) == [0]
    text = log_text(a384)
    assert "warm start: all weights from" in text and "lr 1.00e-03" in text
    # resume wins over warm start: rerunning the finished S384 run does not re-initialise it
    assert main(["train", *s384]) == 0
    assert "ignored: the run folder holds checkpoint" in log_text(a384)


def test_training_on_real_shards_through_the_pipeline(tmp_path):
    """The trainer on real tar shards (tests/pipeline_fixtures.make_dataset): the manifest's mean lands in the
    resolved config and the checkpoint, the class list in the checkpoint, validation counts every val image."""
    from dist_vgg.checkpoint import load_weights
    from dist_vgg.eval.sources import train_scale
    from dist_vgg.train.config import TrainConfig, from_dict, load_file
    from tests.pipeline_fixtures import make_dataset

    stats_mean = [101.0, 102.0, 103.0]
    data = make_dataset(tmp_path / "data", [24, 24], [18], num_classes=3, stats=None)
    run_dir = tmp_path / "run"
    args = [
        "--recipe",
        "tiny-A",
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        "--set",
        "optim.global_batch=16",
        "--set",
        "schedule.max_epochs=2",
        "--set",
        f"augment.mean_rgb={stats_mean}",
    ]
    assert run(args, 1, tmp_path / "logs") == [0]
    resolved = from_dict(TrainConfig, load_file(run_dir / "config.resolved.toml"))
    assert list(resolved.augment.mean_rgb) == stats_mean and resolved.augment.pca_eigval is not None
    w = load_weights(run_dir)
    assert list(w.preprocessing.mean) == stats_mean and w.spec.num_classes == 3
    assert w.classes == [f"n{k:08d}" for k in range(3)]
    assert w.extra["train_scale"] == "37" and train_scale(w) == "37"  # evaluation's "train S" column
    text = log_text(run_dir)
    assert "(3/3)" in text and "(18 images;" in text
