"""`dist-vgg` command line: thin. Each subcommand lives in `dist_vgg.commands.<name>` and exposes
`configure(parser)` and `run(args) -> int`; this module only dispatches, importing just the one it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("dist_vgg.commands.info", "the paper's Tables 1-2 generated from the code"),
    "train": ("dist_vgg.commands.train", "train a VGG net (the paper's recipe; DDP or DeepSpeed)"),
    "plot": ("dist_vgg.commands.plot", "PNG of a run's loss, accuracy, lr and throughput"),
    "eval": ("dist_vgg.commands.eval", "evaluate with the paper's protocol (centre, dense, multi-crop)"),
    "export": ("dist_vgg.commands.export", "write weights for torchvision or as a self-describing file"),
    "import": ("dist_vgg.commands.import_weights", "turn torchvision VGG weights into a dist-vgg file"),
    "predict": ("dist_vgg.commands.predict", "top-5 classes of images"),
    "preflight": ("dist_vgg.commands.preflight", "all-reduce check at job start: bandwidth per node"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Subcommands whose module is present (lets the package grow command by command)."""
    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dist-vgg", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except BrokenPipeError:  # `dist-vgg info | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
