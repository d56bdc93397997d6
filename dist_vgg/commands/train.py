"""`dist-vgg train --recipe NAME --data SHARDS --run-dir RUN [--init-from RUN_OR_CKPT] [--engine ddp|deepspeed]
[--config FILE] [--set section.field=value ...]`: the same command under torchrun, srun and mpiexec.

Exit codes: see dist_vgg.train.exit_codes (0 OK, 1 ERROR, 3 NONFINITE_LOSS, 4 STOPPED, 75 REQUEUE)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dist_vgg.train import exit_codes


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="named recipe (dist_vgg/recipes/NAME.toml), e.g. A-S256, D-S256, tiny-A")
    p.add_argument("--data", help="prepared dataset folder (sets data.path; omit for synthetic data)")
    p.add_argument(
        "--run-dir", type=Path, help="run folder: checkpoints, log, metrics; resumed if it has a checkpoint"
    )
    p.add_argument(
        "--init-from", help="warm start from a run folder, checkpoint or weights file (weights only)"
    )
    p.add_argument("--engine", choices=("ddp", "deepspeed"), help="sets runtime.engine")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="TOML/YAML file merged over the recipe (repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        dest="overrides",
        help="override one setting, e.g. --set optim.lr=0.001 (repeatable; applied last)",
    )
    p.add_argument("--list-recipes", action="store_true", help="print the recipe names and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (TOML) and exit")
    p.add_argument(
        "--print-config-reference",
        action="store_true",
        help="print the Markdown reference of every setting and exit",
    )


def run(args: argparse.Namespace) -> int:
    from dist_vgg.train.config import ConfigError, build_config, config_reference, recipe_names, to_toml

    if args.print_config_reference:
        print(config_reference(), end="")
        return exit_codes.OK
    if args.list_recipes:
        print("\n".join(recipe_names()))
        return exit_codes.OK
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.insert(0, f'data.path="{args.data}"')
    if args.init_from is not None:
        overrides.insert(0, f'warm_start.source="{args.init_from}"')
    if args.engine is not None:
        overrides.insert(0, f'runtime.engine="{args.engine}"')
    try:
        if not args.recipe and not args.config:
            raise ConfigError("name a recipe (--recipe NAME, see --list-recipes) or a --config file")
        cfg = build_config(args.recipe, args.config, overrides)
    except ConfigError as e:
        print(f"dist-vgg train: {e}", file=sys.stderr)
        return exit_codes.ERROR
    if args.print_config:
        print(to_toml(cfg), end="")
        return exit_codes.OK
    if args.run_dir is None:
        print("dist-vgg train: --run-dir is required", file=sys.stderr)
        return exit_codes.ERROR

    from dist_vgg.launch import LaunchError, detect
    from dist_vgg.train.loop import run_training

    try:
        launch = detect()
    except LaunchError as e:
        print(f"dist-vgg train: {e}", file=sys.stderr)
        return exit_codes.ERROR
    return run_training(cfg, args.run_dir, launch)
