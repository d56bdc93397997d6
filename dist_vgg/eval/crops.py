"""Crop geometry of the paper's test protocol (section 3.2): the centre crop and the 5×5 regular grid of
crop×crop windows over an image rescaled to shorter side Q. Pure tensor functions, so the positions can be
checked on a synthetic image whose pixels encode their own coordinates."""

from __future__ import annotations

import torch

GRID = 5
"""Crops per side of the multi-crop grid: 5×5 = 25 positions, 50 crops with their mirrors."""


def grid_offsets(length: int, crop: int, n: int = GRID) -> list[int]:
    """`n` evenly spaced start offsets of a `crop`-long window along a side of `length`: the first touches
    the start, the last the end (offsets rounded to whole pixels). With length == crop all are 0."""
    if crop > length:
        raise ValueError(f"a {crop}-pixel crop does not fit a side of {length} pixels; rescale to Q >= crop")
    if n == 1:
        return [(length - crop) // 2]
    span = length - crop
    return [round(i * span / (n - 1)) for i in range(n)]


def centre_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """The crop×crop window at the centre of N×C×H×W images (the top-left corner rounds down)."""
    h, w = x.shape[-2:]
    if min(h, w) < crop:
        raise ValueError(f"cannot take a {crop}×{crop} centre crop of a {h}×{w} image; use Q >= {crop}")
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def grid_positions(h: int, w: int, crop: int, n: int = GRID) -> list[tuple[int, int]]:
    """(top, left) of each grid crop, row by row."""
    return [(top, left) for top in grid_offsets(h, crop, n) for left in grid_offsets(w, crop, n)]


def grid_crops(x: torch.Tensor, crop: int, n: int = GRID) -> list[torch.Tensor]:
    """The n×n grid crops of N×C×H×W images, one N×C×crop×crop view per position (row by row)."""
    h, w = x.shape[-2:]
    return [x[..., t : t + crop, s : s + crop] for t, s in grid_positions(h, w, crop, n)]


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip (the last axis is the image's width)."""
    return torch.flip(x, dims=(-1,))
