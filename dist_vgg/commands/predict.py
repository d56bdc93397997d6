"""`dist-vgg predict`: the top-5 classes of a few images, with names and probabilities, using the paper's
protocol on each image (dense evaluation with flip averaging by default) and the preprocessing recorded with
the weights."""

from __future__ import annotations

import argparse
import json
import sys

from dist_vgg.commands.import_weights import read_class_file
from dist_vgg.eval.images import load_image
from dist_vgg.eval.protocols import PROTOCOLS, check_scales
from dist_vgg.eval.sources import UnknownCheckpointError, build_model, load_any
from dist_vgg.weights import WeightsFormatError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT_OR_RUN", help="run folder, checkpoint or weights file")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument(
        "--q", type=int, default=256, help="test scale: shorter side after rescaling (default 256)"
    )
    p.add_argument("--mode", default="dense", choices=list(PROTOCOLS), help="protocol (default dense)")
    p.add_argument(
        "--no-flip", dest="flip", action="store_false", help="do not average with the mirror image"
    )
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.add_argument(
        "--classes-file", help="class names, one per line in class order (default: the weights' list)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def class_label(classes: list[str] | None, index: int) -> str:
    """'name (WNID)' for a classes.txt line 'WNID<tab>name', the line itself otherwise, else 'class N'."""
    if not classes:
        return f"class {index}"
    wnid, _, name = classes[index].partition("\t")
    return f"{name} ({wnid})" if name else wnid


def run(args: argparse.Namespace) -> int:
    try:
        w = load_any(args.checkpoint)
        model = build_model(w)
        check_scales([args.q], w.spec.crop, str(args.checkpoint))
        classes = read_class_file(args.classes_file) if args.classes_file else w.classes
        if classes is not None and len(classes) != w.spec.num_classes:
            raise ValueError(
                f"{len(classes)} class names for a net with {w.spec.num_classes} outputs; check --classes-file"
            )
        inputs = [load_image(path, args.q, w.preprocessing) for path in args.images]
    except (UnknownCheckpointError, WeightsFormatError, ValueError, OSError) as e:
        print(f"dist-vgg predict: error: {e}", file=sys.stderr)
        return 2
    top = min(args.top, w.spec.num_classes)
    results = []
    for path, x in zip(args.images, inputs):
        p = PROTOCOLS[args.mode](model, x, args.flip)[0]
        prob, idx = p.topk(top)
        results.append(
            {
                "image": path,
                "top": [
                    {"class": int(i), "label": class_label(classes, int(i)), "probability": float(v)}
                    for v, i in zip(prob.tolist(), idx.tolist())
                ],
            }
        )
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(f"{r['image']}  ({args.mode}, Q={args.q}, flip {'on' if args.flip else 'off'})")
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['probability']:.4f}  {t['label']}  [{t['class']}]")
    return 0
