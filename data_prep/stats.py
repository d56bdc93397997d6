"""`python -m data_prep stats OUT`: the training split's mean RGB and RGB covariance eigen-decomposition on
0–255 pixels, written into manifest.stats. The input pipeline subtracts that mean (the paper's only
pre-processing) and uses the eigenvectors/eigenvalues for AlexNet's colour shift."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import simplejpeg

from dist_vgg.data import format as fmt


def shard_moments(job: tuple[str, int]) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(images, pixels, Σx, Σxxᵀ) over the first `limit` images of a shard (all when limit < 0)."""
    path, limit = job
    n_img, n_px = 0, 0
    s1 = np.zeros(3, np.float64)
    s2 = np.zeros((3, 3), np.float64)
    for _, members in fmt.iter_shard(path):
        if 0 <= limit <= n_img:
            break
        x = simplejpeg.decode_jpeg(members[fmt.JPG], colorspace="rgb").reshape(-1, 3).astype(np.float64)
        s1 += x.sum(0)
        s2 += x.T @ x
        n_px += len(x)
        n_img += 1
    return n_img, n_px, s1, s2


def compute(out: str, max_images: int | None = None, workers: int = 1) -> dict:
    manifest = fmt.load_manifest(out)
    paths = manifest.shard_paths(out, "train")
    sizes = [e.samples for e in manifest.splits["train"].shards]
    jobs, left = [], max_images
    for p, n in zip(paths, sizes):
        if left is not None and left <= 0:
            break
        jobs.append((str(p), -1 if left is None else min(n, left)))
        if left is not None:
            left -= n
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(shard_moments, jobs))
    else:
        parts = [shard_moments(j) for j in jobs]
    images = sum(p[0] for p in parts)
    pixels = sum(p[1] for p in parts)
    mean = sum(p[2] for p in parts) / pixels
    cov = sum(p[3] for p in parts) / pixels - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    eigvec = eigvec * np.where(eigvec.sum(0) < 0, -1.0, 1.0)  # a fixed sign per component
    return {
        "mean_rgb": [float(v) for v in mean],
        "eigval": [float(v) for v in eigval],
        "eigvec": [[float(v) for v in row] for row in eigvec],
        "images": images,
    }


def run(out: str, max_images: int | None = None, workers: int = 1) -> int:
    stats = compute(out, max_images, workers)
    manifest = fmt.load_manifest(out)
    manifest.stats = stats
    manifest.save(out)
    m = ", ".join(f"{v:.2f}" for v in stats["mean_rgb"])
    e = ", ".join(f"{v:.2f}" for v in stats["eigval"])
    print(
        f"stats: {stats['images']:,} training images: mean RGB [{m}], eigenvalues [{e}] → {out}/{fmt.MANIFEST}",
        file=sys.stderr,
    )
    return 0
