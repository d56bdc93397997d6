"""The paper's checkable claims in one place (issue: `make demo` and the paper's claims).

Table 2 parameter counts, the receptive field of stacked 3×3 convs (section 2.3), synchronous data parallelism
equal to single-process training (section 3.3), dense evaluation equal to the centre crop at crop size
(section 3.2), and — on the demo's synthetic data, kept small — whether init-from-A gives D a head start.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dist_vgg.demo import training_losses, validation_curve
from dist_vgg.launch import destroy_process_group
from dist_vgg.models import DenseVGG, VGGSpec, build_vgg, initialise
from dist_vgg.models.geometry import parameter_count, stacked_receptive_field
from tests.data_prep_fixtures import run_prep
from tests.train_fixtures import run

TABLE_2_MILLIONS = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}


@pytest.mark.parametrize("config", list(TABLE_2_MILLIONS))
def test_table_2_parameter_counts(config: str) -> None:
    assert round(parameter_count(VGGSpec(config)) / 1e6) == TABLE_2_MILLIONS[config]


@pytest.mark.parametrize("n", [2, 3])
def test_stacked_3x3_convs_see_5x5_and_7x7_with_fewer_weights(n: int) -> None:
    convs = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(n)])
    for c in convs:
        nn.init.constant_(c.weight, 1.0)
    x = torch.ones(1, 1, 21, 21, requires_grad=True)
    convs(x)[0, 0, 10, 10].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == stacked_receptive_field(n) == 2 * n + 1
    # n 3×3 layers of C channels: n·9C² weights vs (2n+1)²C² for one layer of the same field (27C² vs 49C²).
    assert n * 9 < (2 * n + 1) ** 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_step(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = _tiny_net()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    b = x.shape[0] // world
    nn.functional.cross_entropy(ddp(x[rank * b : (rank + 1) * b]), y[rank * b : (rank + 1) * b]).backward()
    opt.step()
    if rank == 0:
        out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    del ddp, opt
    destroy_process_group()


def _tiny_net() -> nn.Module:
    model = build_vgg("A", num_classes=4, width=1 / 16, crop=32, dropout=0.0)
    initialise(model, "glorot", torch.Generator().manual_seed(0))
    return model


def test_synchronous_data_parallel_equals_single_process() -> None:
    """Section 3.3: batch split across 2 real gloo ranks, gradients averaged == one process on the whole batch."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=g) * 50, torch.randint(0, 4, (8,), generator=g)
    single = _tiny_net()
    opt = torch.optim.SGD(single.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    nn.functional.cross_entropy(single(x), y).backward()
    opt.step()
    manager = mp.Manager()
    out = manager.dict()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_ddp_step, args=(2, _free_port(), x, y, out), nprocs=2, join=True)
    moved = False
    for k, v in single.state_dict().items():
        torch.testing.assert_close(out["state"][k], v, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(v, _tiny_net().state_dict()[k])
    assert moved, "the step changed no weight: the comparison would prove nothing"


def test_dense_evaluation_equals_centre_crop_at_crop_size() -> None:
    model = build_vgg("D", num_classes=6, width=1 / 16, crop=64).eval()
    initialise(model, "glorot", torch.Generator().manual_seed(2))
    x = torch.randn(2, 3, 64, 64) * 50
    torch.testing.assert_close(DenseVGG(model)(x).mean(dim=(2, 3)), model(x), rtol=1e-4, atol=1e-5)


HEAD_START_DATA = ("--classes", "6", "--train-per-class", "120", "--val-per-class", "20", "--size", "small")
"""The demo's synthetic data (its generator, its classes), kept small: 720 training images."""
HEAD_START_RUN = [
    *("--set", "model.width=0.125", "--set", "augment.crop=32"),
    *("--set", "augment.scale_min=37", "--set", "augment.scale_max=73", "--set", "optim.lr=0.01"),
    *("--set", "optim.global_batch=32", "--set", 'schedule.policy="fixed"', "--set", "runtime.seed=0"),
    *("--set", "runtime.log_every=1", "--set", "checkpoint.every_steps=100000", "--set", "data.workers=1"),
]
"""The demo's recipe (crop 32, S ∈ [37, 73], lr 0.01, batch 32) at width 1/8, seed 0, every step logged."""


def _curves(run_dir: Path, steps_per_epoch: int) -> tuple[list[float], list[float]]:
    """(training loss averaged per epoch, validation top-1 per epoch), read as the demo reads its runs."""
    loss = [v for _, v in training_losses(run_dir)]
    per_epoch = [
        round(sum(loss[i : i + steps_per_epoch]) / steps_per_epoch, 4)
        for i in range(0, len(loss), steps_per_epoch)
    ]
    return per_epoch, [round(v, 4) for _, v in validation_curve(run_dir)]


@pytest.mark.timeout(400)
def test_init_from_a_head_start_on_demo_data(tmp_path: Path) -> None:
    """Section 3.1: D starts from A's first four convs and three FC layers. On the demo's data (fixed seeds,
    the real `data_prep` and `dist-vgg train` entry points), D from A and D from random init train for the same
    steps; the test prints both curves and asserts what the runs show:

    - with fresh layers drawn as the demo draws them (Glorot), D-from-A's training loss, averaged over the
      budget, is below D-random's: a head start (it held for seeds 0, 1 and 2; margins 0.066, 0.019, 0.009
      nats), although the validation curves (120 images) cross and the final top-1 is not reliably ahead;
    - with the paper's N(0, 0.01) (width-corrected), D from random init stays at chance (loss ln 6) for the
      whole budget: the stall that made the authors initialise from A. D-from-A with those fresh layers barely
      moves either on this budget (the demo summary reports its own runs the same way).
    """
    raw, shards, logs = tmp_path / "raw", tmp_path / "shards", tmp_path / "logs"
    for args in (
        ("synthetic", str(raw), *HEAD_START_DATA, "--seed", "0"),
        ("imagenet", str(raw), "--out", str(shards), "--shard-samples", "256"),
        ("stats", str(shards)),
    ):
        p = run_prep(*args)
        assert p.returncode == 0, p.stdout + p.stderr
    data = ["--data", str(shards), *HEAD_START_RUN]
    steps = 720 // 32
    a = tmp_path / "A"
    assert run(["--recipe", "tiny-A", "--run-dir", str(a), *data, "--set", "schedule.max_epochs=10",
                "--set", 'model.init="glorot"'], 1, logs) == [0]  # fmt: skip
    d_budget = [*data, "--set", "schedule.max_epochs=6"]
    runs = {
        "D from A (Glorot fresh)": [
            "--recipe",
            "tiny-D",
            "--init-from",
            str(a),
            "--set",
            'model.init="glorot"',
        ],
        "D random (Glorot)": ["--recipe", "tiny-D-random", "--set", 'model.init="glorot"'],
        "D random (paper N(0,0.01))": ["--recipe", "tiny-D-random"],
    }
    curves = {}
    for k, (name, args) in enumerate(runs.items()):
        run_dir = tmp_path / f"D{k}"
        assert run([*args, "--run-dir", str(run_dir), *d_budget], 1, logs) == [0]
        curves[name] = _curves(run_dir, steps)
    print("\nD on the demo data, 6 epochs of 22 steps: training loss per epoch | validation top-1 per epoch")
    for name, (loss, top1) in curves.items():
        print(f"  {name:<28} {loss} | {top1}")

    from_a, random_glorot, random_paper = (curves[n][0] for n in runs)
    assert len(from_a) == len(random_glorot) == len(random_paper) == 6  # the same budget
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(from_a) < mean(random_glorot), f"no head start for init-from-A: {curves}"
    chance = math.log(6)
    assert all(abs(x - chance) < 0.02 for x in random_paper), f"paper init left chance: {random_paper}"
