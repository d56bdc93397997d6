"""Training-input throughput: DALI (CPU mode, and GPU decoding where a GPU is present; fed by the shared
index reader, `data.dali_source=external`, and by DALI's own webdataset reader, `reader`) and the CPU path
without DALI, each against a minimal reference loader (PIL decode, resize, crop, flip in a torch DataLoader),
on the same self-generated shards (ImageNet-like sizes: shorter side 256–500) and the same number of cores.

    .venv/bin/python bench/loader.py [--images 200] [--workers 2] [--passes 2] [--rounds 3]

Goals: DALI ≥ 1.25× the reference (either source), the CPU path ≥ 1.0×. Prints RESULT lines (the last one,
`loader_dali_cpu`, or `loader_dali_gpu` where measured, is the headline).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dist_vgg.data import AugmentConfig, DataConfig, build_train_loader
from dist_vgg.data.config import IMAGENET_MEAN_RGB
from dist_vgg.data.dataset import SplitIndex
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

CROP, SMIN, SMAX, BATCH = 224, 256, 512, 32


def make_shards(root: Path, images: int, per_shard: int = 50, classes: int = 10) -> None:
    """Photo-like JPEGs (smooth structure plus sensor-like noise, quality 90): ~ImageNet bytes per pixel."""
    rng = np.random.default_rng(0)
    entries, pos = [], 0
    while pos < images:
        samples = []
        for _ in range(min(per_shard, images - pos)):
            short, aspect = int(rng.integers(256, 501)), rng.uniform(1.0, 1.5)
            h, w = (short, int(short * aspect)) if rng.random() < 0.7 else (int(short * aspect), short)
            yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
            img = np.stack(
                [
                    128
                    + 90
                    * np.sin(rng.uniform(2, 20) * xx + rng.uniform(0, 6))
                    * np.cos(rng.uniform(2, 20) * yy)
                    for _ in range(3)
                ],
                axis=-1,
            )
            img = (img + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            meta = {"wnid": "n0", "width": w, "height": h, "source": "bench"}
            samples.append(Sample(sample_key("train", pos), buf.getvalue(), pos % classes, meta))
            pos += 1
        ws = write_shard(shard_path(root, "train", len(entries)), samples)
        entries.append(ShardEntry(ws.path.name, ws.samples, ws.bytes, ws.sha256))
    Manifest(
        FORMAT_VERSION, {"bench": True}, classes, {"train": SplitEntry(pos, [0] * classes, entries)}
    ).save(root)
    write_classes(root, [(f"n{k:08d}", "") for k in range(classes)])


class Reference(Dataset):
    """The minimal loader: PIL decode, resize shorter side to S ~ U[256, 512], random crop, random flip."""

    def __init__(self, root: Path, epoch_len: int) -> None:
        self.index, self.n = SplitIndex.open(root, "train"), epoch_len

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(i)
        jpeg, label = self.index.read(int(rng.integers(self.index.samples)))
        img = Image.open(io.BytesIO(jpeg)).convert("RGB")
        s, (w, h) = int(rng.integers(SMIN, SMAX + 1)), img.size
        size = (s, round(h * s / w)) if w <= h else (round(w * s / h), s)
        img = img.resize(size, Image.BILINEAR)
        x, y = int(rng.integers(size[0] - CROP + 1)), int(rng.integers(size[1] - CROP + 1))
        img = img.crop((x, y, x + CROP, y + CROP))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img).copy()), label


def time_reference(root: Path, workers: int, images: int) -> float:
    mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)
    loader = DataLoader(Reference(root, images), batch_size=BATCH, num_workers=workers, prefetch_factor=2)
    it = iter(loader)
    next(it)  # warm-up: workers started
    t, n = time.perf_counter(), 0
    for x, _ in it:
        _ = x.permute(0, 3, 1, 2).float() - mean
        n += len(x)
    return n / (time.perf_counter() - t)


def time_ours(
    root: Path, loader: str, workers: int, passes: int, decode: str = "cpu", source: str = "external"
) -> float:
    device = torch.device("cuda" if decode == "gpu" else "cpu")
    data = DataConfig(
        path=str(root), loader=loader, workers=workers, decode_device=decode, dali_source=source
    )
    aug = AugmentConfig(crop=CROP, scale_min=SMIN, scale_max=SMAX)
    tl = build_train_loader(data, aug, micro_batch=BATCH, rank=0, world_size=1, device=device, seed=0)
    n, t = 0, None
    for epoch in range(passes):
        tl.set_epoch(epoch)
        for x, _ in tl:
            if t is None:  # warm-up: pipeline built, workers started
                t = time.perf_counter()
                continue
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def first_batch(root: Path, loader: str, decode: str) -> torch.Tensor:
    device = torch.device("cuda" if decode == "gpu" else "cpu")
    data = DataConfig(path=str(root), loader=loader, workers=1, decode_device=decode)
    aug = AugmentConfig(crop=CROP, scale_min=SMIN, scale_max=SMAX)
    tl = build_train_loader(data, aug, micro_batch=BATCH, rank=0, world_size=1, device=device, seed=0)
    return next(iter(tl))[0].float().cpu()


def gpu_vs_cpu(root: Path) -> float:
    """The GPU graph's output against the CPU path's on the same samples and draws (a semantics check)."""
    return float((first_batch(root, "dali", "gpu") - first_batch(root, "cpu", "cpu")).abs().mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes / DALI threads"
    )
    p.add_argument("--passes", type=int, default=2, help="epochs over the images per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurements per loader (median)")
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shards(root, a.images)
        mb = sum(f.stat().st_size for f in (root / "train").glob("*.tar")) / 1e6
        print(
            f"{a.images} JPEGs ({mb:.0f} MB), shorter side 256–500; crop {CROP}, S~U[{SMIN},{SMAX}]; "
            f"batch {BATCH}; {a.workers} workers/threads on {os.cpu_count()} cores"
        )
        per_pass = (a.images // BATCH) * BATCH
        runs: dict[str, list[float]] = {"reference": [], "cpu": [], "dali_reader_cpu": [], "dali_cpu": []}
        measure = {
            "reference": lambda: time_reference(root, a.workers, per_pass * a.passes),
            "cpu": lambda: time_ours(root, "cpu", a.workers, a.passes),
            "dali_reader_cpu": lambda: time_ours(root, "dali", a.workers, a.passes, source="reader"),
            "dali_cpu": lambda: time_ours(root, "dali", a.workers, a.passes),
        }
        for _ in range(a.rounds):  # interleaved, so load from other processes hits every loader alike
            for name, fn in measure.items():
                runs[name].append(fn())
        results = {name: float(np.median(v)) for name, v in runs.items()}
        for name, v in runs.items():
            print(
                f"{name:15s} median {results[name]:8.1f} img/s  (rounds: {', '.join(f'{x:.0f}' for x in v)})"
            )
        if torch.cuda.is_available():
            results["dali_gpu"] = time_ours(root, "dali", a.workers, a.passes, decode="gpu")
            print(f"{'dali_gpu':10s} {results['dali_gpu']:8.1f} img/s")
            print(f"GPU-decoded vs CPU path, same batch: mean |Δ| = {gpu_vs_cpu(root):.3f} (0–255 units)")
        else:
            print("GPU decoding: not measured (no CUDA device on this machine)")
    ref = results["reference"]
    for name, goal in (("cpu", 1.0), ("dali_reader_cpu", 1.25), ("dali_cpu", 1.25), ("dali_gpu", None)):
        if name in results:
            flag = (
                "" if goal is None else f" goal>={goal} {'met' if results[name] >= goal * ref else 'MISSED'}"
            )
            print(f"RESULT loader_{name} {results[name]:.1f} img/s ratio={results[name] / ref:.2f}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
