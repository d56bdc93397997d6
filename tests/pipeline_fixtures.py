"""Small real prepared datasets for the input-pipeline tests, written with the shard format's own writer
(`format.write_shard`, `Manifest.save`, `write_classes`), independent of data_prep."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dist_vgg.data.format import (
    FORMAT_VERSION,
    Manifest,
    Sample,
    ShardEntry,
    SplitEntry,
    sample_key,
    shard_path,
    write_classes,
    write_shard,
)

ImageFn = Callable[[int, np.random.Generator], np.ndarray]


def jpeg_bytes(img: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def blobs(size_range: tuple[int, int] = (40, 90)) -> ImageFn:
    """Smooth random images of random size and aspect (ImageNet-like content at test scale)."""

    def make(i: int, rng: np.random.Generator) -> np.ndarray:
        h, w = rng.integers(size_range[0], size_range[1] + 1, size=2)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.zeros((h, w, 3))
        for c in range(3):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6)
            img[..., c] = 127 + 100 * np.sin(fx * xx * 6 + ph) * np.cos(fy * yy * 6)
        return img.clip(0, 255).astype(np.uint8)

    return make


def gradient(side: int = 100) -> ImageFn:
    """Square image: R rises 0→255 left to right, G top to bottom, B constant. After rescaling to S the
    crop's R slope is 255/(side−1)·side/S per pixel (negative when flipped): the content reveals S and flip."""

    def make(i: int, rng: np.random.Generator) -> np.ndarray:
        ramp = np.linspace(0, 255, side)
        img = np.empty((side, side, 3))
        img[..., 0], img[..., 1], img[..., 2] = ramp[None, :], ramp[:, None], 128
        return img.round().astype(np.uint8)

    return make


def constant(rgb: tuple[int, int, int], size: tuple[int, int] = (48, 70)) -> ImageFn:
    def make(i: int, rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(np.array(rgb, dtype=np.uint8), (*size, 3)).copy()

    return make


def make_dataset(
    root: str | Path,
    train_shards: list[int],
    val_shards: list[int] | None = None,
    num_classes: int = 3,
    image: ImageFn | None = None,
    seed: int = 0,
    stats: dict | None = None,
) -> Path:
    """Write a prepared dataset with shards of the given sample counts (uneven allowed); label = position % K."""
    root = Path(root)
    image = image or blobs()
    rng = np.random.default_rng(seed)
    splits = {}
    for split, sizes in (("train", train_shards), ("val", val_shards or [])):
        if not sizes:
            continue
        entries, pos = [], 0
        per_class = [0] * num_classes
        for k, n in enumerate(sizes):
            samples = []
            for _ in range(n):
                img = image(pos, rng)
                label = pos % num_classes
                per_class[label] += 1
                meta = {
                    "wnid": f"n{label:08d}",
                    "width": img.shape[1],
                    "height": img.shape[0],
                    "source": "test",
                }
                samples.append(Sample(sample_key(split, pos), jpeg_bytes(img), label, meta))
                pos += 1
            w = write_shard(shard_path(root, split, k), samples)
            entries.append(ShardEntry(w.path.name, w.samples, w.bytes, w.sha256))
        splits[split] = SplitEntry(pos, per_class, entries)
    Manifest(FORMAT_VERSION, {"test": True}, num_classes, splits, stats=stats).save(root)
    write_classes(root, [(f"n{k:08d}", f"class {k}") for k in range(num_classes)])
    return root
