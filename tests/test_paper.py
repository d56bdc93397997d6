"""The paper's checkable claims in one place (issue: `make demo` and the paper's claims).

Table 2 parameter counts, the receptive field of stacked 3×3 convs (section 2.3), synchronous data parallelism
equal to single-process training (section 3.3), dense evaluation equal to the centre crop at crop size
(section 3.2), and — on the demo's synthetic data, kept small — whether init-from-A gives D a head start.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dist_vgg.launch import destroy_process_group
from dist_vgg.models import DenseVGG, VGGSpec, build_vgg, initialise
from dist_vgg.models.geometry import parameter_count, stacked_receptive_field

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
