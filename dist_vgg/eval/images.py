"""Single images for `dist-vgg predict`: decode, rescale isotropically to shorter side Q, and prepare the pixels
the way the weights expect (their recorded `Preprocessing`), without the batch pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dist_vgg.data.augment import rescaled_size, resize_box
from dist_vgg.weights import Preprocessing


def rescale_shorter_side(img: Image.Image, q: int) -> Image.Image:
    """Isotropic rescale so that the shorter side is `q`, with the size rounding and the resize filter of the
    evaluation loader (`dist_vgg.data.augment`), so `predict` sees what `eval` sees."""
    h, w = rescaled_size(img.height, img.width, q)
    return Image.fromarray(
        resize_box(np.asarray(img), (0.0, 0.0, float(img.height), float(img.width)), (h, w))
    )


def normalise(pixels: torch.Tensor, pp: Preprocessing) -> torch.Tensor:
    """N×3×H×W RGB pixels on 0–255 → the network's input: channel order, then (pixel·scale − mean) / std."""
    if pp.channel_order == "BGR":
        pixels = pixels.flip(1)
    elif pp.channel_order != "RGB":
        raise ValueError(f"unknown channel order {pp.channel_order!r} in the weights' preprocessing")
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels.float() * pp.scale - mean) / std


def load_image(path: str | Path, q: int, pp: Preprocessing) -> torch.Tensor:
    """1×3×H×W network input for the image at `path`, shorter side `q`."""
    try:
        with Image.open(path) as im:
            img = rescale_shorter_side(im.convert("RGB"), q)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
    return normalise(pixels, pp)
