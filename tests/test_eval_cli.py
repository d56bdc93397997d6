"""`dist-vgg eval` end to end on real shards: the same exact counts on 1, 2 and 3 ranks (real gloo process
groups, uneven shards, an ensemble with dense+multi-crop over two scales), the paper-like table, JSON and
CSV, and clear errors for bad inputs."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.eval_fixtures import (
    ROOT,
    cli,
    main,
    read_json,
    run_ranks,
    tiny_model,
    write_dataset,
    write_weights,
)

pytestmark = pytest.mark.timeout(180)

CLASSES = 10
SIZES = [
    (40, 48),
    (48, 40),
    (40, 40),
    (36, 52),
    (40, 48),
    (44, 44),
    (40, 48),
    (48, 64),
    (40, 40),
    (40, 48),
    (52, 36),
]
"""11 validation images of 7 shapes (portrait, landscape, square) in shards of 4, 4 and 3."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root / "data", SIZES, classes=CLASSES, per_shard=4)
    a = write_weights(
        root / "a.pt", tiny_model("A", classes=CLASSES, crop=32, seed=1), extra={"train_scale": "256"}
    )
    d = write_weights(root / "b.pt", tiny_model("B", classes=CLASSES, crop=32, seed=2))
    return root, data, a, d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_args(setup, out):
    _, data, a, d = setup
    return [
        "eval", str(a), str(d), "--data", str(data), "--mode", "dense+multicrop", "--scales", "32,48",
        "--device", "cpu", "--workers", "1", "--batch-size", "3", "--timeout", "60", "--json", str(out),
    ]  # fmt: skip


def _counts(report: dict) -> list[tuple]:
    return [
        (r["configuration"], r["test_scales"], r["mode"], r["images"], r["top1_correct"], r["top5_correct"])
        for r in report["results"]
    ]


def test_same_exact_results_on_one_two_and_three_ranks(setup, capsys):
    root = setup[0]
    assert main(*_eval_args(setup, root / "w1.json")) == 0
    printed = capsys.readouterr().out
    assert "images evaluated: 11 (validation split: 11)" in printed
    assert "ensemble A+B" in printed and "configuration  train S  test Q" in printed
    one = read_json(root / "w1.json")
    assert one["world_size"] == 1 and all(r["images"] == 11 for r in one["results"])

    # world size 2 through the real launcher
    port = _free_port()
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
         "-m", "dist_vgg.cli", *_eval_args(setup, root / "w2.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    # world size 3: the variables torchrun would set, one process per rank
    outs = run_ranks(["-m", "dist_vgg.cli", *_eval_args(setup, root / "w3.json")], 3, 120, root / "w3-logs")
    assert [code for code, _, _ in outs] == [0, 0, 0], [err[-2000:] for _, _, err in outs]
    assert "images evaluated: 11 (validation split: 11)" in outs[0][1]
    assert "3 images on this rank" in outs[0][1]  # rank 0's share of 11 over 3 ranks: 3 (then 4 and 4)
    two, three = read_json(root / "w2.json"), read_json(root / "w3.json")
    assert (two["world_size"], three["world_size"]) == (2, 3)
    assert _counts(one) == _counts(two) == _counts(three)


def test_table_json_and_csv_agree(setup, capsys):
    root, data, a, _ = setup
    out_json, out_csv = root / "c.json", root / "c.csv"
    args = ["eval", str(a), "--data", str(data), "--mode", "centre", "--scales", "40", "--no-flip"]
    assert (
        main(*args, "--device", "cpu", "--workers", "1", "--json", str(out_json), "--csv", str(out_csv)) == 0
    )
    printed = capsys.readouterr().out
    report = read_json(out_json)
    (row,) = report["results"]
    assert (row["configuration"], row["train_scale"], row["test_scales"], row["mode"]) == (
        "A",
        "256",
        "40",
        "centre",
    )
    assert row["flip"] is False and row["images"] == 11
    assert abs(row["top1_err"] - 100 * (1 - row["top1_correct"] / 11)) < 1e-9
    with open(out_csv) as f:
        (csv_row,) = list(csv.DictReader(f))
    assert int(csv_row["top5_correct"]) == row["top5_correct"]
    assert f"A              256      40      centre  no    {row['top1_err']:.2f}" in printed


def test_bad_inputs_are_clear_errors(setup, tmp_path, capsys):
    _, data, a, _ = setup
    common = ["--device", "cpu", "--workers", "1"]
    wrong = write_weights(tmp_path / "w.pt", tiny_model("A", classes=7, crop=32))
    assert main("eval", str(wrong), "--data", str(data), *common) == 2
    assert "has 7 classes but the data at" in capsys.readouterr().err

    assert main("eval", str(a), "--data", str(data), "--scales", "24,48", *common) == 2
    assert "test scale(s) 24 are smaller than the 32-pixel crop" in capsys.readouterr().err

    no_val = write_dataset(tmp_path / "noval", SIZES[:2], classes=CLASSES, with_val=False)
    assert main("eval", str(a), "--data", str(no_val), *common) == 2
    assert "has no validation split (splits: train)" in capsys.readouterr().err

    odd = tmp_path / "odd.pt"
    torch.save({"weights": torch.zeros(2)}, odd)
    assert main("eval", str(odd), "--data", str(data), *common) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err

    assert main("eval", str(a), "--data", str(tmp_path / "nowhere"), *common) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


def test_an_error_reaches_the_user_without_a_traceback(setup, tmp_path):
    _, data, _, _ = setup
    wrong = write_weights(tmp_path / "w.pt", tiny_model("A", classes=3, crop=32))
    r = cli("eval", str(wrong), "--data", str(data), "--device", "cpu")
    assert r.returncode == 2
    assert r.stderr.startswith("dist-vgg eval: error: ") and "Traceback" not in r.stderr
