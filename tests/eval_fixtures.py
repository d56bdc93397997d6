"""Shared helpers for the evaluation / export tests: tiny trained-looking nets, a weights file, torchvision's
VGG layout rebuilt by hand (torchvision does not install beside the CPU torch), and tiny prepared datasets."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dist_vgg.models.init import initialise
from dist_vgg.models.vgg import VGG, VGGSpec
from dist_vgg.weights import Preprocessing, Weights, save_weights
from tests.train_fixtures import reap

ROOT = Path(__file__).resolve().parents[1]
TINY_MEAN = Preprocessing(mean=(120.0, 115.0, 100.0))


def tiny_model(
    config: str = "D", classes: int = 5, width: float = 1 / 16, crop: int = 32, seed: int = 0
) -> VGG:
    """A narrow net with Glorot weights and an amplified FC-8, so its posteriors are far from uniform and
    depend visibly on the input (flips, crops and ensemble members give different answers)."""
    torch.manual_seed(seed)
    model = VGG(VGGSpec(config, classes, width, crop))
    initialise(model, "glorot", torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.classifier[6].weight.mul_(20.0)
    return model.eval()


def write_weights(
    path: Path, model: VGG, classes: list[str] | None = None, extra: dict | None = None
) -> Path:
    save_weights(path, Weights(model.spec, model.state_dict(), TINY_MEAN, classes, "test", extra or {}))
    return path


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """1×3×h×w image whose channel 0 holds the row, channel 1 the column, channel 2 row·1000 + column."""
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    return torch.stack([rows, cols, rows * 1000 + cols])[None]


TORCHVISION_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}
"""torchvision/models/vgg.py's `cfgs` (A=vgg11, B=vgg13, D=vgg16, E=vgg19), copied by hand."""


class TorchvisionVGG(nn.Module):
    """torchvision.models.vgg.VGG rebuilt line by line (features, AdaptiveAvgPool2d((7, 7)), classifier),
    with a width multiplier on the channels so a test can keep it small. Width 1 is torchvision's net."""

    def __init__(self, config: str, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in TORCHVISION_CFGS[config]:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                out = max(1, round(v * width))
                layers += [nn.Conv2d(in_ch, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        fc = max(1, round(4096 * width))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, fc),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(fc, fc),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def cli(*args: str, world: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m dist_vgg.cli ARGS` as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(world or {})}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if world is None or var not in world:
            env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "dist_vgg.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ranks(argv: list[str], world: int, timeout: float, log_dir: Path) -> list[tuple[int, str, str]]:
    """Start `world` processes of `python ARGV` as ranks of one job (torchrun's variables, a fresh port) and
    return each one's (exit code, stdout, stderr). Output goes to files, so no rank can block on a full pipe
    that nobody reads. A rank still running at the deadline is made to dump every thread's stack (faulthandler
    on SIGABRT) before it is killed, and the failure shows each rank's output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
           "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    for rank in range(world):
        out, err = log_dir / f"rank{rank}.out", log_dir / f"rank{rank}.err"
        with open(out, "w") as o, open(err, "w") as e:  # the child keeps its own copies
            procs.append(
                subprocess.Popen(
                    [sys.executable, *argv],
                    cwd=ROOT,
                    stdout=o,
                    stderr=e,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                )
            )
        logs.append((out, err))
    hung = reap(procs, timeout)
    results = [(p.returncode, out.read_text(), err.read_text()) for p, (out, err) in zip(procs, logs)]
    if hung:
        shown = "\n".join(
            f"--- rank {r}: exit {c}\n{o[-1500:]}\n{e[-4000:]}" for r, (c, o, e) in enumerate(results)
        )
        raise AssertionError(f"ranks {hung} still running after {timeout:.0f} s (stacks below):\n{shown}")
    return results


def main(*args: str) -> int:
    """The same entry point in this process (cheaper than a subprocess: no second torch import)."""
    from dist_vgg.cli import main as cli_main

    return cli_main(list(args))


def jpeg(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_dataset(
    root: Path,
    val_sizes: list[tuple[int, int]],
    classes: int = 5,
    per_shard: int = 4,
    with_val: bool = True,
) -> Path:
    """A prepared dataset in the real shard format: `val_sizes` (h, w) images in uneven shards (the last one
    shorter), labels i % classes, and a small train split."""
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

    splits = {}
    wanted = {"train": [(40, 48)] * 4}
    if with_val:
        wanted["val"] = val_sizes
    for split, sizes in wanted.items():
        samples = [
            Sample(
                sample_key(split, i),
                jpeg(h, w, seed=i + (0 if split == "val" else 1000)),
                i % classes,
                {"wnid": f"n{i % classes:08d}", "width": w, "height": h, "source": f"x/{i}.jpg"},
            )
            for i, (h, w) in enumerate(sizes)
        ]
        shards = []
        for s, start in enumerate(range(0, len(samples), per_shard)):
            written = write_shard(shard_path(root, split, s), samples[start : start + per_shard])
            shards.append(ShardEntry(written.path.name, written.samples, written.bytes, written.sha256))
        per_class = [sum(1 for x in samples if x.label == c) for c in range(classes)]
        splits[split] = SplitEntry(len(samples), per_class, shards)
    Manifest(FORMAT_VERSION, {"test": True}, classes, splits).save(root)
    write_classes(root, [(f"n{c:08d}", f"thing {c}") for c in range(classes)])
    return root


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
