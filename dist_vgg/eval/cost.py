"""What each test protocol costs, predicted from the geometry alone (multiply-adds per image): the conv stack
scales with the rescaled image's area, and the FC-as-conv head runs once per position of its score map. At full
size, dense at Q=384 costs ≈ 4.4× a 224 centre crop on a 4:3 image and ≈ 3.2× on a square one; multi-crop is
25 FC forwards per scale (×2 with flips)."""

from __future__ import annotations

from dist_vgg.eval.crops import GRID
from dist_vgg.models.vgg import VGGSpec, conv_slots


def dense_macs(spec: VGGSpec, h: int, w: int) -> int:
    """Multiply-adds of one dense forward over an h×w image (convs at each layer's size, pools flooring, FC-6
    as a feature_size² conv, FC-7/FC-8 as 1×1 convs over the score map)."""
    macs, slots = 0, conv_slots(spec)
    for n, s in enumerate(slots):
        macs += h * w * s.in_channels * s.out_channels * s.kernel**2
        if n + 1 == len(slots) or slots[n + 1].block != s.block:
            h, w = h // 2, w // 2
    k = spec.feature_size
    positions = (h - k + 1) * (w - k + 1)
    fc6_in = slots[-1].out_channels * k * k
    fc = spec.fc_width
    return macs + positions * (fc6_in * fc + fc * fc + fc * spec.num_classes)


def centre_macs(spec: VGGSpec) -> int:
    """One crop through the FC head (the same as a dense forward on a crop-sized image)."""
    return dense_macs(spec, spec.crop, spec.crop)


def protocol_macs(spec: VGGSpec, mode: str, h: int, w: int, flip: bool = True) -> int:
    """Per image at one scale, where h×w is the image rescaled to shorter side Q."""
    views = 2 if flip else 1
    if mode == "centre":
        return views * centre_macs(spec)
    if mode == "dense":
        return views * dense_macs(spec, h, w)
    if mode == "multicrop":
        return views * GRID * GRID * centre_macs(spec)
    if mode == "dense+multicrop":
        return protocol_macs(spec, "dense", h, w, flip) + protocol_macs(spec, "multicrop", h, w, flip)
    raise ValueError(f"unknown evaluation mode {mode!r}")


def rescaled(q: int, aspect: float) -> tuple[int, int]:
    """(h, w) of an image of width/height `aspect` (≥ 1: landscape) rescaled to shorter side q."""
    return q, round(q * aspect)
