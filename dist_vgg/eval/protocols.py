"""The paper's test protocols (section 3.2) as functions from a batch of whole rescaled images to soft-max
posteriors, N × classes. Averaging always happens on posteriors (after the soft-max), never on scores:

- `centre`: the crop×crop centre crop through the FC head.
- `dense`: the FC layers as convs over the whole image, the class-score map averaged spatially, soft-max.
- `multicrop`: a 5×5 regular grid of crop×crop windows, each through the FC head; posteriors averaged.

With `flip`, each protocol also runs on the mirrored image and averages the two posteriors (for multi-crop:
50 crops per scale). Multi-scale averaging, dense + multi-crop fusion and ensembles are further averages of
these posteriors (`dist_vgg.eval.runner`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dist_vgg.eval.crops import GRID, centre_crop, grid_crops, mirror
from dist_vgg.models.dense import dense_logits
from dist_vgg.models.vgg import VGG

COMPONENTS = ("centre", "dense", "multicrop")
"""Protocols that produce a posterior on their own."""
MODES: dict[str, tuple[str, ...]] = {
    "centre": ("centre",),
    "dense": ("dense",),
    "multicrop": ("multicrop",),
    "dense+multicrop": ("dense", "multicrop"),
}
"""`--mode` → the component protocols whose posteriors it averages."""


def _posterior(scores: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.float(), dim=1)


def _with_flip(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, flip: bool) -> torch.Tensor:
    """Posterior of `x`, averaged with that of its mirror when `flip`."""
    p = fn(x)
    return (p + fn(mirror(x))) / 2 if flip else p


@torch.no_grad()
def centre_posteriors(model: VGG, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    crop = model.spec.crop
    return _with_flip(lambda im: _posterior(model(centre_crop(im, crop).contiguous())), x, flip)


@torch.no_grad()
def dense_posteriors(model: VGG, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """Every image of `x` has the same size (the loader never pads: padding would change the score map)."""
    return _with_flip(lambda im: _posterior(dense_logits(model, im)), x, flip)


@torch.no_grad()
def multicrop_posteriors(model: VGG, x: torch.Tensor, flip: bool = True, grid: int = GRID) -> torch.Tensor:
    """Mean posterior of the grid×grid crops (and their mirrors): one forward per position keeps memory at
    2·N crops whatever the grid."""
    crop = model.spec.crop
    total = None
    views = grid_crops(x, crop, grid)
    for view in views:
        batch = view.contiguous()
        if flip:
            batch = torch.cat([batch, mirror(batch)])
        p = _posterior(model(batch))
        if flip:
            p = p.view(2, x.shape[0], -1).sum(dim=0)
        total = p if total is None else total + p
    return total / (len(views) * (2 if flip else 1))


PROTOCOLS: dict[str, Callable[[VGG, torch.Tensor, bool], torch.Tensor]] = {
    "centre": centre_posteriors,
    "dense": dense_posteriors,
    "multicrop": multicrop_posteriors,
}


def parse_mode(mode: str) -> tuple[str, ...]:
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(MODES)}") from None


def parse_scales(text: str) -> list[int]:
    """'256,384,512' → [256, 384, 512] (the test scales Q, shorter sides after rescaling)."""
    try:
        scales = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--scales {text!r} must be comma-separated integers such as 256,384,512") from None
    if not scales:
        raise ValueError("--scales needs at least one test scale Q, e.g. 256")
    if len(set(scales)) != len(scales):
        raise ValueError(f"--scales {text!r} repeats a scale")
    return scales


def check_scales(scales: list[int], crop: int, who: str) -> None:
    small = [q for q in scales if q < crop]
    if small:
        raise ValueError(
            f"test scale(s) {', '.join(map(str, small))} are smaller than the {crop}-pixel crop of {who}; "
            f"every Q in --scales must be >= {crop}"
        )
