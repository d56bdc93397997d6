"""The paper's training augmentation (section 3.1) as numbers, shared by the DALI graph and the CPU path.

Everything random is drawn here, in numpy, from (seed, epoch, rank, batch): the scale S per image, the crop
position, the flip and the colour-shift coefficients. Both paths then apply the same deterministic operation
— decode, resize the source box that maps onto the crop to crop×crop, flip, subtract (mean − colour shift) —
so they cannot drift apart, a resumed run redraws exactly the same parameters, and tests can observe S.

Resizing: **bilinear (triangle) filter with antialiasing** in both paths (DALI `INTERP_LINEAR` with
`antialias=True`, PIL `Image.BILINEAR`, which widens the triangle by the downscale factor). Rescaling to S and
then cropping equals resizing only the source box that lands in the crop, which is what both paths do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
import simplejpeg
from PIL import Image

from dist_vgg.data.config import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN_RGB,
    AugmentConfig,
    DataConfig,
)
from dist_vgg.data.format import load_manifest
from dist_vgg.data.sampler import AUGMENT_STREAM
from dist_vgg.weights import Preprocessing

RESIZE_FILTER = "bilinear (triangle) with antialiasing"
"""The one resize filter both paths use (training and evaluation)."""
STATS_EIGVAL_SCALE = 1.0 / 255.0
"""Manifest `stats.eigval` are eigenvalues of the covariance of 0–255 pixels (pixel² units). AlexNet's shift
is eigvec·(α·λ) on 0–1 pixels; on 0–255 pixels it is 255·eigvec·(α·λ₀₁) = eigvec·(α·λ₂₅₅/255), so the config's
`pca_eigval` (the multiplier for 0–255 pixels, like `IMAGENET_EIGVAL` = λ₀₁·255) is the stats value / 255."""


def resolve_augment(aug: AugmentConfig, data: DataConfig) -> AugmentConfig:
    """Fill mean and eigen-decomposition: values already set win, else the manifest's measured `stats`, else
    ImageNet's published values. Idempotent; write the result into the run's resolved config at first start."""
    stats = None
    if data.path and (aug.mean_rgb is None or aug.pca_eigval is None or aug.pca_eigvec is None):
        stats = load_manifest(data.path).stats
    mean = aug.mean_rgb
    if mean is None:
        mean = tuple(stats["mean_rgb"]) if stats else IMAGENET_MEAN_RGB
    eigval = aug.pca_eigval
    if eigval is None:
        eigval = tuple(v * STATS_EIGVAL_SCALE for v in stats["eigval"]) if stats else IMAGENET_EIGVAL
    eigvec = aug.pca_eigvec
    if eigvec is None:
        eigvec = tuple(tuple(r) for r in stats["eigvec"]) if stats else IMAGENET_EIGVEC
    return replace(
        aug,
        mean_rgb=tuple(float(v) for v in mean),
        pca_eigval=tuple(float(v) for v in eigval),
        pca_eigvec=tuple(tuple(float(v) for v in row) for row in eigvec),
    )


def _require_resolved(aug: AugmentConfig) -> None:
    if aug.mean_rgb is None or aug.pca_eigval is None or aug.pca_eigvec is None:
        raise ValueError(
            "augment config is not resolved: call dist_vgg.data.resolve_augment(aug, data) first"
        )


def preprocessing_for(aug: AugmentConfig) -> Preprocessing:
    """What evaluation must do to pixels for nets trained with `aug`: subtract its mean, divide by its std
    (1 when unset, the paper), scale 1 (0–255 pixels)."""
    _require_resolved(aug)
    return Preprocessing(mean=aug.mean_rgb, std=aug.std_rgb or (1.0, 1.0, 1.0), scale=1.0)


@dataclass
class BatchParams:
    """One batch's random draws (n images)."""

    scale: np.ndarray
    """S per image (int): shorter side after isotropic rescaling, uniform over [scale_min, scale_max]."""
    crop_x: np.ndarray
    """Crop position per image in [0, 1]: anchor = round(crop_x · (rescaled width − crop))."""
    crop_y: np.ndarray
    flip: np.ndarray
    """Horizontal flip per image (bool)."""
    color_shift: np.ndarray
    """n×3 RGB shift added to every pixel (0–255 units): eigvec · (α · eigval), α ~ N(0, σ²)."""


def draw_params(aug: AugmentConfig, n: int, seed: int, epoch: int, rank: int, batch: int) -> BatchParams:
    """The random draws of batch `batch` of `rank` in `epoch`: a pure function, so a resume redraws them."""
    _require_resolved(aug)
    rng = np.random.default_rng([seed, epoch, rank, batch, AUGMENT_STREAM])
    scale = rng.integers(aug.scale_min, aug.scale_max + 1, size=n)
    crop_x, crop_y = rng.random(n), rng.random(n)
    flip = rng.random(n) < 0.5 if aug.flip else np.zeros(n, dtype=bool)
    alpha = rng.normal(0.0, aug.color_shift_std, size=(n, 3)) if aug.color_shift_std > 0 else np.zeros((n, 3))
    shift = (alpha * np.asarray(aug.pca_eigval)) @ np.asarray(aug.pca_eigvec).T
    return BatchParams(scale, crop_x, crop_y, flip, shift)


def rescaled_size(h: int, w: int, s: int) -> tuple[int, int]:
    """(height, width) after isotropic rescaling so the shorter side is s."""
    if h <= w:
        return s, max(s, round(w * s / h))
    return max(s, round(h * s / w)), s


def crop_box(h: int, w: int, s: int, crop: int, fx: float, fy: float) -> tuple[float, float, float, float]:
    """Source box (y0, x0, y1, x1) in original pixels that becomes the crop×crop crop of the image rescaled
    to shorter side s, at relative position (fx, fy) ∈ [0, 1]² (0.5, 0.5: the centre crop)."""
    rh, rw = rescaled_size(h, w, s)
    ay, ax = round(fy * (rh - crop)), round(fx * (rw - crop))
    sy, sx = h / rh, w / rw
    return ay * sy, ax * sx, (ay + crop) * sy, (ax + crop) * sx


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """HWC uint8 RGB. simplejpeg (libjpeg-turbo, accurate DCT and upsampling); PIL for what it refuses."""
    try:
        return simplejpeg.decode_jpeg(jpeg, colorspace="RGB", fastdct=False, fastupsample=False)
    except ValueError:
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(height, width) from the JPEG header, without decoding."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(jpeg)
        return h, w
    except ValueError:
        w, h = Image.open(io.BytesIO(jpeg)).size
        return h, w


def resize_box(
    img: np.ndarray, box: tuple[float, float, float, float], out_hw: tuple[int, int]
) -> np.ndarray:
    """Resize the source box (y0, x0, y1, x1) of an HWC image to out_hw with the shared filter."""
    y0, x0, y1, x1 = box
    pil = Image.fromarray(img).resize((out_hw[1], out_hw[0]), Image.BILINEAR, box=(x0, y0, x1, y1))
    return np.asarray(pil)
