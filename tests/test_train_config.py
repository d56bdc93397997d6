"""Config: every recipe resolves, the batch split refuses impossible world sizes with the valid ones listed,
overrides and files merge in order, bad settings are named; CLI errors and the NaN stop."""

from __future__ import annotations

import pytest
import torch

from dist_vgg.cli import main
from dist_vgg.train.config import (
    ConfigError,
    OptimConfig,
    build_config,
    config_reference,
    recipe_names,
    split_batch,
)
from dist_vgg.train.engine import DDPEngine
from tests.train_fixtures import run

pytestmark = pytest.mark.timeout(120)


def test_every_recipe_resolves_and_follows_the_paper():
    names = recipe_names()
    for stage in ("S256", "S384", "jitter"):
        for net in ("A", "A-LRN", "B", "C", "D", "E"):
            assert f"{net}-{stage}" in names
    for name in names:
        cfg = build_config(name)
        assert cfg.recipe == name
        large_batch = name.startswith("large-batch") or "-b1024" in name  # departures from the paper
        if not name.startswith("tiny") and not large_batch:
            assert (cfg.optim.global_batch, cfg.optim.momentum, cfg.optim.weight_decay) == (256, 0.9, 5e-4)
            assert cfg.model.dropout == 0.5 and cfg.augment.crop == 224
            assert (cfg.comm.compress, cfg.comm.bucket_cap_mb) == ("none", 25.0)  # exact fp32 averaging
    assert build_config("D-S256").warm_start.expects == "A"
    s384 = build_config("E-S384")
    assert (s384.optim.lr, s384.augment.scale_min, s384.warm_start.expects) == (1e-3, 384, "same")
    jitter = build_config("D-jitter")
    assert (jitter.augment.scale_min, jitter.augment.scale_max, jitter.val_scale) == (256, 512, 384)
    big = build_config("D-S256-b1024")
    assert big.optim.peak_lr == pytest.approx(0.04) and any("departure" in n for n in big.notes)
    for net in ("D", "E"):
        lb = build_config(f"large-batch-{net}")
        assert (lb.model.config, lb.warm_start.expects, lb.augment.scale_min) == (net, "A", 256)
        assert (lb.optim.global_batch, lb.optim.warmup_epochs, lb.optim.peak_lr) == (
            512,
            5.0,
            pytest.approx(0.02),
        )
        assert (lb.comm.compress, lb.comm.bucket_cap_mb) == ("bf16", 25.0)
        assert any("departure" in n for n in lb.notes) and split_batch(lb.optim, 16).micro_batch == 32
    tiny = {
        f"tiny-{n}-{s}": build_config(f"tiny-{n}-{s}") for n in ("A", "D", "E") for s in ("S384", "jitter")
    }
    for name, cfg in tiny.items():
        scales = (55, 55) if name.endswith("S384") else (37, 73)
        assert (cfg.augment.scale_min, cfg.augment.scale_max, cfg.augment.crop) == (*scales, 32), name
        assert (cfg.optim.lr, cfg.warm_start.expects, cfg.model.config) == (1e-3, "same", name.split("-")[1])
    assert (build_config("tiny-E").model.config, build_config("tiny-E").warm_start.expects) == ("E", "A")


def test_batch_split_and_refusal():
    s = split_batch(OptimConfig(max_micro_batch=64), 2)
    assert (s.micro_batch, s.accumulation) == (64, 2)
    s = split_batch(OptimConfig(max_micro_batch=48), 16)
    assert s.micro_batch * s.accumulation * 16 == 256 and s.micro_batch <= 48
    with pytest.raises(
        ConfigError, match=r"cannot be split evenly over 3 ranks; valid world sizes: 1, 2, 4, 8"
    ):
        split_batch(OptimConfig(), 3)


def test_overrides_files_and_errors(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("optim:\n  lr: 0.005\naugment:\n  mean_rgb: [1, 2, 3]\n")
    cfg = build_config("tiny-A", [yaml_file], ["optim.lr=0.001", "runtime.compile=true"])
    assert cfg.optim.lr == 0.001 and cfg.augment.mean_rgb == (1.0, 2.0, 3.0) and cfg.runtime.compile
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) optim.learning_rate; valid in optim: "):
        build_config("tiny-A", overrides=["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"runtime.precision='fp8' is not one of"):
        build_config("tiny-A", overrides=["runtime.precision=fp8"])
    with pytest.raises(ConfigError, match=r"optim.lr must be float"):
        build_config("tiny-A", overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match="unknown recipe 'Z-S256'; choose one of: "):
        build_config("Z-S256")
    with pytest.raises(ConfigError, match=r"augment: need augment.crop <= augment.scale_min"):
        build_config("tiny-A", overrides=["augment.scale_min=16"])
    with pytest.raises(ConfigError, match=r"comm.compress must be one of none, bf16 \(got 'fp8'\)"):
        build_config("tiny-A", overrides=["comm.compress=fp8"])
    assert build_config("tiny-A", overrides=["comm.bucket_cap_mb=5"]).comm.bucket_cap_mb == 5.0


def test_config_reference_documents_every_field():
    ref = config_reference()
    for setting in (
        "optim.global_batch",
        "schedule.patience",
        "runtime.check_every",
        "data.path",
        "augment.scale_max",
        "metrics.port",
        "comm.bucket_cap_mb",
        "comm.compress",
        "deepspeed.zero_stage",
        "warm_start.expects",
    ):
        assert f"| `{setting}` |" in ref
    assert "| |" not in ref.replace("|---|", "")


def test_gradient_accumulation_matches_one_big_batch():
    cfg = build_config("tiny-A", overrides=["model.dropout=0.0"])
    x = torch.randn(8, 3, 32, 32) * 50
    y = torch.randint(0, 5, (8,))
    results = []
    for accumulation in (1, 2):
        torch.manual_seed(0)
        from dist_vgg.models import build_vgg

        model = build_vgg("A", 5, 0.0625, 32, 0.0)
        engine = DDPEngine(model, cfg, torch.device("cpu"), "fp32", accumulation, distributed=False)
        for chunk_x, chunk_y in zip(x.chunk(accumulation), y.chunk(accumulation)):
            engine.micro_step(chunk_x, chunk_y, last=True)
        engine.optimizer_step(0.1)
        results.append(model.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[1][k], results[0][k], rtol=1e-5, atol=1e-6)


def test_cli_errors_are_clear(capsys):
    assert main(["train", "--recipe", "tiny-A", "--run-dir", "/nonexistent-ok", "--set", "optim.nope=1"]) == 1
    assert "unknown setting(s) optim.nope" in capsys.readouterr().err
    assert main(["train", "--run-dir", "/nonexistent-ok"]) == 1
    assert "name a recipe (--recipe NAME" in capsys.readouterr().err
    assert main(["train", "--print-config-reference"]) == 0
    assert "| `optim.lr` |" in capsys.readouterr().out


def test_nonfinite_loss_stops_with_its_exit_code_and_keeps_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "--recipe",
        "tiny-A",
        "--run-dir",
        str(run_dir),
        "--set",
        "optim.lr=1e12",
        "--set",
        "checkpoint.every_steps=1",
        "--set",
        "runtime.check_every=1",
        "--set",
        "checkpoint.keep_last=5",
    ]
    assert run(args, 1, tmp_path / "logs") == [3]
    text = (run_dir / "train.log").read_text()
    bad = int(text.split("loss became NaN/inf at step ")[1].split(" ")[0])
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert saved == [f"step-{s:08d}" for s in range(1, bad)], "no checkpoint at or after the bad step"
    assert f"the last good checkpoint is step-{bad - 1:08d}" in text
    assert not (run_dir / "final").exists() and not (run_dir / "LOCK").exists()


def test_requeue_cap_and_time_based_checkpoints(tmp_path, monkeypatch):
    """SIGUSR1 after SLURM already requeued the job `runtime.max_restarts` times: save, then exit STOPPED (no
    further requeue). Time-based checkpoints (every_steps off) are written at agreement steps meanwhile."""
    import signal

    from dist_vgg import checkpoint as ckpt
    from dist_vgg.train import exit_codes
    from tests.train_fixtures import launch, wait_all, wait_for_log

    run_dir = tmp_path / "run"
    args = [
        "--recipe",
        "tiny-A",
        "--run-dir",
        str(run_dir),
        "--set",
        "runtime.max_restarts=2",
        "--set",
        "checkpoint.every_steps=0",
        "--set",
        "checkpoint.every_minutes=0.0001",
        "--set",
        "checkpoint.keep_last=100",
        "--set",
        "runtime.check_every=1",
        "--set",
        "runtime.log_every=1",
    ]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # what a job requeued twice sees
    procs = launch(args, 1, tmp_path / "logs")
    wait_for_log(run_dir / "train.log", " step 6 (", procs)
    procs[0].send_signal(signal.SIGUSR1)
    assert wait_all(procs) == [exit_codes.STOPPED]
    text = (run_dir / "train.log").read_text()
    assert "already requeued 2 times (runtime.max_restarts=2)" in text
    assert len(ckpt.committed_checkpoints(run_dir)) >= 3
