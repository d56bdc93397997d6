"""`dist-vgg eval`: the paper's test protocol (section 3.2) on a prepared validation split — centre crop,
dense, multi-crop or dense+multi-crop, several test scales, flips, ensembles of several checkpoints — with
exact top-1/top-5 errors on any number of ranks (`torchrun`, `srun`, `mpiexec`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dist_vgg import launch as launch_mod
from dist_vgg.data.config import DataConfig
from dist_vgg.data.format import ShardFormatError, load_manifest
from dist_vgg.eval.ensemble import CoverageError
from dist_vgg.eval.protocols import MODES, check_scales, parse_mode, parse_scales
from dist_vgg.eval.report import format_table, rows_from, write_csv, write_json
from dist_vgg.eval.runner import EvalPlan, evaluate
from dist_vgg.eval.sources import UnknownCheckpointError, build_model, load_any, train_scale
from dist_vgg.weights import Weights, WeightsFormatError

ERRORS = (ValueError, ShardFormatError, UnknownCheckpointError, CoverageError, WeightsFormatError)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT_OR_RUN",
        help="run folder, checkpoint or weights file; several = an ensemble (posteriors averaged)",
    )
    p.add_argument("--data", required=True, help="prepared dataset folder (manifest.json, val/ shards)")
    p.add_argument("--mode", default="dense", choices=list(MODES), help="test protocol (default dense)")
    p.add_argument("--scales", default="256", help="test scales Q, comma-separated (default 256); averaged")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="do not average with mirrored images")
    p.add_argument("--batch-size", type=int, default=16, help="images per rank per batch (default 16)")
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if present"
    )
    p.add_argument("--loader", default="auto", choices=("auto", "dali", "cpu"), help="input pipeline")
    p.add_argument("--workers", type=int, default=2, help="loader threads/processes per rank (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--csv", metavar="OUT", help="also write the results as CSV")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds any collective may wait (default 1800)"
    )


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available here; use --device cpu")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def validate(args: argparse.Namespace) -> tuple[list[Weights], int, EvalPlan]:
    """Everything that can be wrong with the inputs, checked on every rank before any collective."""
    modes = parse_mode(args.mode)
    scales = parse_scales(args.scales)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size})")
    manifest = load_manifest(args.data)
    if "val" not in manifest.splits or manifest.splits["val"].samples == 0:
        raise ShardFormatError(
            f"{args.data} has no validation split (splits: {', '.join(manifest.splits) or 'none'}); "
            "prepare one with `python -m data_prep imagenet ... ` including the validation images"
        )
    members = [load_any(path) for path in args.checkpoints]
    for path, w in zip(args.checkpoints, members):
        if w.spec.num_classes != manifest.num_classes:
            raise ValueError(
                f"{path} has {w.spec.num_classes} classes but the data at {args.data} has "
                f"{manifest.num_classes}; evaluate it on the dataset it was trained for"
            )
        check_scales(scales, w.spec.crop, str(path))
    return members, manifest.splits["val"].samples, EvalPlan(modes, tuple(scales), args.flip)


def run(args: argparse.Namespace) -> int:
    env = launch_mod.detect()
    try:
        members, expected, plan = validate(args)
        device = pick_device(args.device, env.local_rank)
    except ERRORS as e:
        print(f"dist-vgg eval: error: {e}", file=sys.stderr)
        return 2
    from dist_vgg.data import build_eval_loader

    say = print if env.is_main else (lambda _msg: None)
    models = [build_model(w) for w in members]
    data = DataConfig(path=str(args.data), loader=args.loader, workers=args.workers)

    def source(n: int, q: int, crop: int | None):
        return build_eval_loader(
            data,
            q=q,
            crop=crop,
            batch_size=args.batch_size,
            rank=env.rank,
            world_size=env.world_size,
            device=device,
            preprocessing=members[n].preprocessing,
            split="val",
        )

    launch_mod.init_process_group(env, device.type, args.timeout)
    failed = True
    try:
        say(
            f"evaluating {len(models)} network(s) on {expected} validation images, {env.world_size} rank(s), "
            f"mode {args.mode}, Q={','.join(map(str, plan.scales))}, flip {'on' if plan.flip else 'off'}"
        )
        results = evaluate(
            models, plan, source, expected, device, log=print if env.is_main else lambda _m: None
        )
        failed = False
    except ERRORS as e:
        print(f"dist-vgg eval: error: {e}", file=sys.stderr)
        return 2
    finally:
        launch_mod.destroy_process_group(together=not failed)
    if results is None:
        return 0
    names = _names([w.spec.config for w in members])
    rows = rows_from(results, names, [train_scale(w) for w in members], plan.flip)
    print(format_table(rows))
    final = rows[-1]
    print(f"images evaluated: {final.images} (validation split: {expected})")
    meta = {
        "checkpoints": [str(Path(c)) for c in args.checkpoints],
        "data": str(args.data),
        "mode": args.mode,
        "scales": list(plan.scales),
        "flip": plan.flip,
        "world_size": env.world_size,
        "validation_images": expected,
    }
    if args.json:
        write_json(args.json, rows, meta)
    if args.csv:
        write_csv(args.csv, rows)
    return 0


def _names(configs: list[str]) -> list[str]:
    """Configuration names, numbered where the same one appears twice ('D#1', 'D#2')."""
    return [f"{c}#{i + 1}" if configs.count(c) > 1 else c for i, c in enumerate(configs)]
