"""`python -m data_prep <command>`: synthetic, imagenet, verify, index, stats. Thin: parse, call the module
that does the job, turn a PrepError or a format error into one clear line and exit status 2."""

from __future__ import annotations

import argparse
import re
import sys
import time

from data_prep.errors import PrepError
from dist_vgg.data.format import ShardFormatError


def byte_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 256MB, 1GiB or 100000000")
    unit = (m.group(2) or "").upper()
    base = 1024 if unit.endswith("I") else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("I")]
    return int(float(m.group(1)) * base**power)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Prepare ImageNet (archives or folders), or a synthetic stand-in, as verified WebDataset shards.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synthetic", help="write a synthetic dataset in ImageNet's raw layout")
    s.add_argument("raw", help="new folder to write (train/<wnid>/*.JPEG, flat val/, devkit-style labels)")
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--train-per-class", type=int, default=100)
    s.add_argument("--val-per-class", type=int, default=10)
    s.add_argument(
        "--size",
        choices=("small", "imagenet"),
        default="imagenet",
        help="imagenet: shorter side 150–500 (default); small: 40–90, for 32–64 px crops",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument(
        "--labels",
        choices=("devkit", "kaggle"),
        default="devkit",
        help="label the flat val/ with the devkit's ground truth (default) or LOC_val_solution.csv",
    )
    s.add_argument(
        "--problems",
        action="store_true",
        help="add CMYK, grayscale, PNG-named-.JPEG, EXIF-rotated, progressive, truncated, empty and "
        "text files (listed in PROBLEMS.json)",
    )
    s.add_argument(
        "--archives",
        action="store_true",
        help="write the original archives (ILSVRC2012_img_train.tar, _img_val.tar, devkit .tar.gz) instead of folders",
    )

    i = sub.add_parser("imagenet", help="convert ImageNet (archives or folders) into verified shards")
    i.add_argument(
        "src", help="folder with the ILSVRC2012 archives, or train/ and val/ folders, or Kaggle's layout"
    )
    i.add_argument("--out", required=True, help="output folder (shards, manifest.json, classes.txt)")
    i.add_argument("--workers", type=int, default=1, help="processes on this node (per MPI rank)")
    size = i.add_mutually_exclusive_group()
    size.add_argument("--shard-samples", type=int, help="samples per shard")
    size.add_argument("--shard-bytes", type=byte_size, help="target shard size, e.g. 256MB (default 128MB)")
    i.add_argument("--seed", type=int, default=0, help="seed of the global shuffle")
    i.add_argument("--fast", action="store_true", help="check JPEG headers and markers only (no full decode)")
    i.add_argument("--strict", action="store_true", help="fail if any input file is unusable")
    i.add_argument(
        "--resize-shorter",
        type=int,
        metavar="PX",
        help="re-encode (quality 95, Lanczos) images whose shorter side exceeds PX, e.g. 512",
    )
    i.add_argument("--reencode-progressive", action="store_true", help="store progressive JPEGs as baseline")
    i.add_argument("--overwrite", action="store_true", help="replace an OUT made with other options")
    i.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="export progress to Prometheus on this port + local rank (0: off)",
    )
    i.add_argument("--metrics-addr", default="0.0.0.0", help="address the metrics exporter binds")
    i.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="S",
        help="keep the exporter up S seconds after finishing, for a last scrape",
    )

    v = sub.add_parser("verify", help="re-hash and re-count every shard against the manifest")
    v.add_argument("out")
    v.add_argument("--decode", action="store_true", help="also decode every image")
    v.add_argument("--workers", type=int, default=1)

    x = sub.add_parser("index", help="rewrite the DALI index of every shard")
    x.add_argument("out")

    t = sub.add_parser("stats", help="mean RGB and RGB covariance eigen-decomposition of the train split")
    t.add_argument("out")
    t.add_argument("--max-images", type=int, help="use only the first N training images (in shard order)")
    t.add_argument("--workers", type=int, default=1)
    return p


def _imagenet(args: argparse.Namespace) -> int:
    from data_prep import imagenet
    from data_prep.parallel import make_team
    from data_prep.progress import PrepMetrics

    opts = imagenet.PrepOptions(
        seed=args.seed,
        shard_samples=args.shard_samples,
        shard_bytes=args.shard_bytes,
        fast=args.fast,
        reencode_progressive=args.reencode_progressive,
        resize_shorter=args.resize_shorter,
    )
    team = make_team(args.workers)
    metrics = PrepMetrics(team.rank)
    if args.metrics_port:
        port = metrics.serve(args.metrics_port, team.local_rank, args.metrics_addr)
        print(
            f"data_prep[rank {team.rank}] metrics on http://{args.metrics_addr}:{port}/metrics",
            file=sys.stderr,
            flush=True,
        )
    try:
        rc = imagenet.run(
            args.src, args.out, opts, team, strict=args.strict, overwrite=args.overwrite, metrics=metrics
        )
    except (PrepError, ShardFormatError) as e:
        print(f"data_prep imagenet: error: {e}", file=sys.stderr, flush=True)
        team.close()
        team.abort(2)
        return 2
    except BaseException:
        team.close()
        if team.comm is not None:
            import traceback

            traceback.print_exc()
            team.abort(1)
        raise
    team.close()
    if args.metrics_port and args.metrics_linger > 0:
        time.sleep(args.metrics_linger)
    return rc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "synthetic":
            from data_prep import synthetic

            spec = synthetic.SynthSpec(
                args.classes,
                args.train_per_class,
                args.val_per_class,
                args.size,
                args.seed,
                args.problems,
                args.labels,
            )
            t0 = time.monotonic()
            make = synthetic.generate_archives if args.archives else synthetic.generate
            summary = make(args.raw, spec, args.workers)
            print(
                f"synthetic: {summary['classes']} classes, {summary['train']} train + {summary['val']} val images"
                f"{', ' + str(summary['problems']) + ' problem files' if summary['problems'] else ''} "
                f"in {time.monotonic() - t0:.1f}s → {args.raw}",
                file=sys.stderr,
            )
            return 0
        if args.command == "imagenet":
            return _imagenet(args)
        if args.command == "verify":
            from data_prep import verify

            return verify.run(args.out, args.decode, args.workers)
        if args.command == "index":
            from data_prep import index

            return index.run(args.out)
        if args.command == "stats":
            from data_prep import stats

            return stats.run(args.out, args.max_images, args.workers)
    except (PrepError, ShardFormatError) as e:
        print(f"data_prep {args.command}: error: {e}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
