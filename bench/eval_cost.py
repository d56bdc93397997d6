"""Measured time per image of each test protocol on a tiny VGG, against the cost ratio the geometry predicts
(`dist_vgg.eval.cost`). The paper-scale prediction (D at Q=384 vs a 224 centre crop: ≈4.4× for a 4:3 image,
≈3.2× for a square one) is scaled to the tiny crop: Q = 384·crop/224.

    python bench/eval_cost.py [--config D] [--width 0.25] [--crop 64] [--batch 4] [--repeats 3] [--threads 1]

Prints one RESULT line per mode: measured CPU seconds per image relative to a centre crop (no flip), with
ratio = measured / predicted (1.0: time follows multiply-adds; below 1: small convs run more efficiently on
larger images; above 1: per-call overhead dominates)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_vgg.eval.cost import centre_macs, dense_macs, protocol_macs, rescaled
from dist_vgg.eval.protocols import PROTOCOLS
from dist_vgg.models.init import initialise
from dist_vgg.models.vgg import VGG, VGGSpec


def interleaved_minimum(fns: dict[str, tuple], repeats: int) -> dict[str, float]:
    """CPU seconds per image of each (fn, x) (process time: on a shared machine, time spent waiting for a core
    does not count), the minimum over `repeats` rounds that alternate between the cases."""
    best = {name: float("inf") for name in fns}
    for fn, x in fns.values():
        fn(x)  # warm-up
    for _ in range(repeats):
        for name, (fn, x) in fns.items():
            start = time.process_time()
            fn(x)
            best[name] = min(best[name], (time.process_time() - start) / x.shape[0])
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="D")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = VGGSpec(args.config, 1000, args.width, args.crop)
    model = VGG(spec).eval()
    initialise(model, "glorot")
    q = round(384 * args.crop / 224)
    full = VGGSpec(args.config)
    print(
        f"{args.config} width {args.width}, crop {args.crop}, test Q {q} (= 384·{args.crop}/224), "
        f"batch {args.batch}, {args.threads} thread(s), CPU time"
    )
    print(
        f"paper scale prediction: dense Q=384 vs 224 centre = {dense_macs(full, 384, 512) / centre_macs(full):.2f}× "
        f"(4:3), {dense_macs(full, 384, 384) / centre_macs(full):.2f}× (square)"
    )
    g = torch.Generator().manual_seed(0)
    centre_x = torch.randn(args.batch, 3, args.crop, args.crop, generator=g) * 50
    cases = {"centre": (lambda x: PROTOCOLS["centre"](model, x, False), centre_x)}
    predicted = {}
    for name, mode, aspect in (
        ("dense_4to3", "dense", 4 / 3),
        ("dense_square", "dense", 1.0),
        ("multicrop_50_square", "multicrop", 1.0),
    ):
        h, w = rescaled(q, aspect)
        flip = mode == "multicrop"  # the 50-crop protocol includes its mirrors
        x = torch.randn(args.batch, 3, h, w, generator=g) * 50
        cases[name] = (lambda im, mode=mode, flip=flip: PROTOCOLS[mode](model, im, flip), x)
        predicted[name] = protocol_macs(spec, mode, h, w, flip) / centre_macs(spec)
    with torch.no_grad():
        secs = interleaved_minimum(cases, args.repeats)
    base = secs["centre"]
    print(f"centre (no flip) {args.crop}×{args.crop}: {base * 1e3:8.2f} ms/img")
    for name, pred in predicted.items():
        shape = "×".join(map(str, cases[name][1].shape[-2:]))
        print(
            f"{name:<22} {shape}: {secs[name] * 1e3:8.2f} ms/img  measured {secs[name] / base:6.2f}×  predicted {pred:6.2f}×"
        )
    for name, pred in predicted.items():
        measured = secs[name] / base
        print(f"RESULT eval_cost_{name} {measured:.2f} x_centre ratio={measured / pred:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
