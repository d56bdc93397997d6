"""The VGG family exactly as the paper defines it (Table 1/2), torchvision's key layout, init and init-from-A,
the dense head and the receptive-field claim of section 2.3."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from dist_vgg.models import (
    CONFIGS,
    DenseVGG,
    TransferError,
    VGGSpec,
    build_vgg,
    count_parameters,
    initialise,
    transfer_from_a,
)
from dist_vgg.models.geometry import (
    block_receptive_fields,
    forward_macs,
    parameter_count,
    stacked_receptive_field,
)
from dist_vgg.models.init import PAPER_STD, full_fan_ins
from tests.eval_fixtures import (
    TORCHVISION_CFGS,  # torchvision's own cfgs, written out independently of our table
)

# shared/PAPER.md, "exact count (ours, 1000 classes)"
PAPER_COUNTS = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}


def torchvision_keys(cfg: list) -> list[str]:
    keys, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            keys += [f"features.{i}.weight", f"features.{i}.bias"]
            i += 2
    for j in (0, 3, 6):
        keys += [f"classifier.{j}.weight", f"classifier.{j}.bias"]
    return keys


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exact_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        model = build_vgg(name)
    assert count_parameters(model) == PAPER_COUNTS[name]
    assert parameter_count(VGGSpec(name)) == PAPER_COUNTS[name]


@pytest.mark.parametrize("name", ["A", "B", "D", "E"])
def test_torchvision_key_layout(name: str) -> None:
    with torch.device("meta"):
        model = build_vgg(name, num_classes=10)
    assert list(model.state_dict()) == torchvision_keys(TORCHVISION_CFGS[name])


def test_c_has_its_1x1_convs_and_lrn_follows_first_conv() -> None:
    c = build_vgg("C", num_classes=5, width=1 / 16, crop=32)
    kernels = [m.kernel_size[0] for m in c.features if isinstance(m, nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 3, 3, 1, 3, 3, 1]
    lrn = build_vgg("A-LRN", num_classes=5, width=1 / 16, crop=32).features
    assert isinstance(lrn[0], nn.Conv2d) and isinstance(lrn[1], nn.ReLU)
    assert isinstance(lrn[2], nn.LocalResponseNorm)


def test_lrn_is_alexnets_sum_formula() -> None:
    """b = a / (k + α Σ_{window} a²)^β with α = 1e-4, k = 2, β = 0.75, window 5 (AlexNet), not the mean."""
    lrn = build_vgg("A-LRN", num_classes=5, width=1 / 8, crop=32).features[2]
    a = torch.rand(1, 8, 3, 3) * 50
    expected = torch.empty_like(a)
    for c in range(8):
        window = a[:, max(0, c - 2) : c + 3]
        expected[:, c] = a[:, c] / (2.0 + 1e-4 * (window**2).sum(1)) ** 0.75
    torch.testing.assert_close(lrn(a), expected)


def test_width_and_crop_shape_the_net() -> None:
    model = build_vgg("D", num_classes=7, width=1 / 8, crop=64)
    assert model.classifier[0].in_features == 64 * 2 * 2  # 512/8 channels × (64/32)²
    assert model.classifier[0].out_features == 512  # 4096/8
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(ValueError, match="64×64"):
        model(torch.zeros(1, 3, 96, 96))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": "F"}, r"unknown VGG configuration 'F'; choose one of A, A-LRN, B, C, D, E"),
        ({"config": "D", "width": 0}, r"width must be > 0 \(got 0\)"),
        ({"config": "D", "width": -0.5}, r"width must be > 0 \(got -0.5\)"),
        ({"config": "D", "crop": 100}, r"crop must be a positive multiple of 32 \(got 100\)"),
        ({"config": "D", "num_classes": 0}, r"num_classes must be >= 1"),
    ],
)
def test_bad_specs_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_vgg(**kwargs)


def test_paper_init_is_std_001_with_zero_biases() -> None:
    model = build_vgg("A", num_classes=10, width=1 / 4, crop=64)
    initialise(model, "paper", torch.Generator().manual_seed(0))
    w = model.classifier[0].weight
    assert abs(w.std().item() - PAPER_STD) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_width_corrected_init_keeps_full_net_gain_and_makes_tiny_nets_trainable() -> None:
    spec = VGGSpec("A", num_classes=10, width=1 / 8, crop=64)
    model = build_vgg(**spec.to_dict())
    initialise(model, "paper-width-corrected", torch.Generator().manual_seed(0))
    fans = full_fan_ins(spec)
    assert fans["classifier.0"] == 512 * 7 * 7
    for key, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            expected = PAPER_STD * (fans[key] / m.weight[0].numel()) ** 0.5
            assert abs(m.weight.std().item() / expected - 1) < 0.15, key
    x = torch.randn(8, 3, 64, 64) * 50
    model.eval()
    corrected = model(x).std().item()
    initialise(model, "paper", torch.Generator().manual_seed(0))
    paper = model(x).std().item()
    # The paper's σ=0.01 collapses a narrow net's signal (logits ~1e-8); the corrected init keeps the
    # full-size net's per-layer gain, five orders of magnitude more signal.
    assert paper < 1e-6 and corrected > 1e-4 and corrected > 1e4 * paper


def test_glorot_init_bound() -> None:
    model = build_vgg("B", num_classes=10, width=1 / 8, crop=32)
    initialise(model, "glorot", torch.Generator().manual_seed(0))
    w = model.features[2].weight  # 8→8 3×3 conv
    bound = (6 / (8 * 9 + 8 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="unknown init scheme 'he'; choose one of paper"):
        initialise(model, "he")


def tiny(config: str, seed: int, **kw) -> nn.Module:
    kw = {"num_classes": 5, "width": 1 / 16, "crop": 64} | kw
    model = build_vgg(config, **kw)
    initialise(model, "paper-width-corrected", torch.Generator().manual_seed(seed))
    return model


@pytest.mark.parametrize("target", ["B", "C", "D", "E"])
def test_init_from_a_copies_exactly_the_documented_layers(target: str) -> None:
    a = tiny("A", 1)
    net = tiny(target, 2)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    report = transfer_from_a(net, a.state_dict(), a.spec)
    # Paper mapping: A's convs features.0 (block 1), features.3 (block 2), features.6 and .8 (block 3) go to
    # the first conv of blocks 1 and 2 and the first two convs of block 3 of the target; FC-6/7/8 to FC-6/7/8.
    first_convs = [s for s in net.features if isinstance(s, nn.Conv2d)]
    blocks = {"B": (0, 2, 4, 5), "C": (0, 2, 4, 5), "D": (0, 2, 4, 5), "E": (0, 2, 4, 5)}[target]
    conv_keys = [k for k, m in net.features.named_children() if isinstance(m, nn.Conv2d)]
    expected_targets = [f"features.{conv_keys[i]}" for i in blocks]
    assert list(report.copied) == [*expected_targets, "classifier.0", "classifier.3", "classifier.6"]
    assert list(report.copied.values())[:4] == ["features.0", "features.3", "features.6", "features.8"]
    sd, a_sd = net.state_dict(), a.state_dict()
    for t_key, s_key in report.copied.items():
        for suffix in ("weight", "bias"):
            assert torch.equal(sd[f"{t_key}.{suffix}"], a_sd[f"{s_key}.{suffix}"])
    for key in report.fresh:
        for suffix in ("weight", "bias"):
            assert torch.equal(sd[f"{key}.{suffix}"], fresh[f"{key}.{suffix}"]), key
    assert len(report.fresh) + len(report.copied) == len(first_convs) + 3
    assert "interpretation" in str(report) and "fresh" in str(report)


def test_all_compatible_mapping_copies_every_a_conv() -> None:
    a, d = tiny("A", 1), tiny("D", 2)
    report = transfer_from_a(d, a.state_dict(), a.spec, mapping="all-compatible")
    assert list(report.copied.values())[:8] == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    # D's blocks 4 and 5 start at features.17 and .24: A's block-4/5 convs land on their first two convs.
    assert list(report.copied)[:8] == [f"features.{i}" for i in (0, 5, 10, 12, 17, 19, 24, 26)]


def test_impossible_transfers_are_refused_with_the_reason() -> None:
    a, d = tiny("A", 1), tiny("D", 2)
    b = tiny("B", 3)
    with pytest.raises(TransferError, match=r"needs a checkpoint of configuration A \(got 'B'\)"):
        transfer_from_a(d, b.state_dict(), b.spec)
    wide = tiny("A", 1, width=1 / 8)
    with pytest.raises(TransferError, match=r"width differs \(A has 0.125, D has 0.0625\)"):
        transfer_from_a(d, wide.state_dict(), wide.spec)
    other = tiny("A", 1, num_classes=7)
    with pytest.raises(TransferError, match=r"num_classes differs \(A has 7, D has 5\)"):
        transfer_from_a(d, other.state_dict(), other.spec)
    partial = {k: v for k, v in a.state_dict().items() if k != "features.3.weight"}
    with pytest.raises(TransferError, match=r"no tensor 'features.3.weight'"):
        transfer_from_a(d, partial, a.spec)
    with pytest.raises(TransferError, match="unknown init-from-A mapping 'first4'"):
        transfer_from_a(d, a.state_dict(), a.spec, mapping="first4")


@pytest.mark.parametrize("config", ["A", "C", "D"])
def test_dense_head_equals_fc_head_on_crop_sized_input(config: str) -> None:
    model = tiny(config, 0, crop=64).eval()
    x = torch.randn(3, 3, 64, 64) * 50
    dense = DenseVGG(model)(x)
    assert dense.shape == (3, 5, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], model(x), rtol=1e-4, atol=1e-5)


def test_dense_head_on_non_square_input_slides_the_fc_head() -> None:
    """On a 64×128 image the score map is 1×3: each position is the FC head on the 64×64 window at stride 32."""
    model = tiny("D", 0, crop=64).eval()
    x = torch.randn(2, 3, 64, 128) * 50
    scores = DenseVGG(model)(x)
    assert scores.shape == (2, 5, 1, 3)
    for j in range(3):
        torch.testing.assert_close(
            scores[:, :, 0, j], model(x[:, :, :, 32 * j : 32 * j + 64]), rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ValueError, match="at least 64 on each side"):
        DenseVGG(model)(torch.zeros(1, 3, 32, 96))


def measured_receptive_field(stack: nn.Module, size: int) -> int:
    """Side of the input region with non-zero ∂(centre output)/∂input."""
    x = torch.ones(1, 1 if isinstance(stack[0], nn.Conv2d) and stack[0].in_channels == 1 else 3, size, size)
    x.requires_grad_(True)
    out = stack(x)
    c = out.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    return int(nz[:, 0].max() - nz[:, 0].min() + 1)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_stacked_3x3_convs_see_3_5_7(n: int) -> None:
    convs = [nn.Conv2d(1, 1, 3, padding=1) for _ in range(n)]
    for c in convs:
        nn.init.constant_(c.weight, 1.0)  # positive weights, no ReLU: no unit can be dead
    assert measured_receptive_field(nn.Sequential(*convs), 33) == stacked_receptive_field(n) == 2 * n + 1


@pytest.mark.parametrize("config", ["A", "D", "E"])
def test_block_receptive_fields_match_info(config: str) -> None:
    """Measured through a real VGG stack (positive weights; max-pools as average pools of the same geometry,
    since a max-pool's gradient reaches one input only) against the analytic figure `info` prints."""
    model = build_vgg(config, num_classes=5, width=1 / 32, crop=256)
    layers = []
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            nn.init.zeros_(m.bias)
        layers.append(nn.AvgPool2d(2, 2) if isinstance(m, nn.MaxPool2d) else m)
    analytic = block_receptive_fields(model.spec)
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.AvgPool2d)]
    for block in range(3):  # blocks 1–3 fit comfortably inside a 256-px input
        stack = nn.Sequential(*layers[: pools[block]])  # up to the block's last conv (+ReLU), before its pool
        assert measured_receptive_field(stack, 256) == analytic[block], f"block {block + 1}"


def test_info_cli_prints_tables_1_and_2() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dist_vgg.cli", "info", "--json"], capture_output=True, text=True, check=True
    ).stdout
    rows = {r["config"]: r for r in json.loads(out)}
    assert {k: v["parameters"] for k, v in rows.items()} == PAPER_COUNTS
    assert rows["D"]["forward_gmacs"] == pytest.approx(15.47, abs=0.01)
    assert rows["E"]["forward_gmacs"] == pytest.approx(19.63, abs=0.01)
    assert rows["D"]["receptive_field_per_block"][:2] == [5, 14]
    assert rows["D"]["weight_layers"] == 16 and rows["E"]["weight_layers"] == 19
    text = subprocess.run(
        [sys.executable, "-m", "dist_vgg.cli", "info", "--config", "C"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "conv1-256" in text and "133,638,952" in text


def test_forward_macs_full_size() -> None:
    assert forward_macs(VGGSpec("D")) / 1e9 == pytest.approx(15.47, abs=0.01)
