"""Paper Table 2 and section 2.3 derived from the table: parameter counts, multiply-adds and receptive fields,
computed analytically (no network is built, so full-size figures cost nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from dist_vgg.models.vgg import VGGSpec, conv_slots


@dataclass(frozen=True)
class LayerInfo:
    key: str
    kind: str  # "conv3x3", "conv1x1", "fc"
    block: int | None  # 1-based block for convs, None for FC
    in_channels: int
    out_channels: int
    params: int
    macs: int  # multiply-adds per image at the spec's crop
    receptive_field: int | None  # side of the input window one output unit sees (convs only)


def layers(spec: VGGSpec) -> list[LayerInfo]:
    """Every weight layer of `spec` with its cost and receptive field at input `spec.crop`."""
    out: list[LayerInfo] = []
    side, rf, jump = spec.crop, 1, 1
    slots = conv_slots(spec)
    for n, s in enumerate(slots):
        rf += (s.kernel - 1) * jump
        params = s.in_channels * s.out_channels * s.kernel**2 + s.out_channels
        macs = side * side * s.in_channels * s.out_channels * s.kernel**2
        kind = f"conv{s.kernel}x{s.kernel}"
        out.append(LayerInfo(s.key, kind, s.block + 1, s.in_channels, s.out_channels, params, macs, rf))
        if n + 1 == len(slots) or slots[n + 1].block != s.block:  # 2×2 stride-2 max-pool
            rf += jump
            jump *= 2
            side //= 2
    fc_in = slots[-1].out_channels * spec.feature_size**2
    for key, (i, o) in zip(
        ("classifier.0", "classifier.3", "classifier.6"),
        ((fc_in, spec.fc_width), (spec.fc_width, spec.fc_width), (spec.fc_width, spec.num_classes)),
    ):
        out.append(LayerInfo(key, "fc", None, i, o, i * o + o, i * o, None))
    return out


def parameter_count(spec: VGGSpec) -> int:
    return sum(layer.params for layer in layers(spec))


def forward_macs(spec: VGGSpec) -> int:
    return sum(layer.macs for layer in layers(spec))


def block_receptive_fields(spec: VGGSpec) -> list[int]:
    """Receptive field (input pixels per side) of one unit after the last conv of each block."""
    rfs: dict[int, int] = {}
    for layer in layers(spec):
        if layer.block is not None:
            rfs[layer.block] = layer.receptive_field or 0
    return [rfs[b] for b in sorted(rfs)]


def stacked_receptive_field(n_convs: int, kernel: int = 3) -> int:
    """n stacked stride-1 k×k convs see (k-1)·n + 1 pixels per side: 3, 5, 7 for 3×3 (section 2.3)."""
    return (kernel - 1) * n_convs + 1
