"""`dist-vgg import`: turn torchvision's VGG state_dicts (vgg11/13/16/19, e.g. the released ImageNet weights)
into dist-vgg's self-describing weights file, recording torchvision's preprocessing (0–1 pixels, ImageNet
mean and std) so that `eval` and `predict` feed them what they were trained on. With it our dense and
multi-crop protocols run on torchvision's released weights (a check of the data and of the protocol)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from dist_vgg.models.table import CONFIGS
from dist_vgg.models.vgg import VGG, VGGSpec, conv_slots
from dist_vgg.weights import (
    TORCHVISION_PREPROCESSING,
    Preprocessing,
    Weights,
    WeightsFormatError,
    safe_torch_load,
    save_weights,
)

TORCHVISION_CONFIGS = ("A", "B", "D", "E")


class TorchvisionImportError(ValueError):
    """A file that is not a torchvision VGG state_dict of the named configuration."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="torchvision state_dict, e.g. vgg16-397923af.pth")
    p.add_argument(
        "--from", dest="source", required=True, choices=("torchvision",), help="where it comes from"
    )
    p.add_argument(
        "--config", required=True, choices=TORCHVISION_CONFIGS, help="A=vgg11 B=vgg13 D=vgg16 E=vgg19"
    )
    p.add_argument(
        "--classes-file", help="class names, one per line in class order (or a dist-vgg classes.txt)"
    )
    p.add_argument("--out", required=True, help="dist-vgg weights file to write")


def read_class_file(path: str | Path) -> list[str]:
    """One class per line in class-index order: a name, or `WNID<tab>name` as in a prepared classes.txt."""
    lines = [line.rstrip("\n") for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line.strip()]


def unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    """A plain state_dict, or one nested under 'state_dict'/'model'; DDP's 'module.' prefix removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TorchvisionImportError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def spec_from_state(state: dict[str, torch.Tensor], config: str, path: str) -> VGGSpec:
    """Width, classes and crop read off the tensors (torchvision's own: width 1, 1000 classes, FC-6 from 7×7)."""
    for key in ("features.0.weight", "classifier.0.weight", "classifier.6.weight"):
        if key not in state:
            raise TorchvisionImportError(f"{path} has no {key!r}: it is not a torchvision VGG state_dict")
    width = state["features.0.weight"].shape[0] / 64
    num_classes = state["classifier.6.weight"].shape[0]
    probe = VGGSpec(config, num_classes, width, 32)
    last = conv_slots(probe)[-1].out_channels
    side = math.isqrt(state["classifier.0.weight"].shape[1] // last)
    if side * side * last != state["classifier.0.weight"].shape[1]:
        raise TorchvisionImportError(
            f"{path}: FC-6 takes {state['classifier.0.weight'].shape[1]} inputs, not a square map of {last} "
            f"channels; is it really configuration {config}?"
        )
    return VGGSpec(config, num_classes, width, side * 32)


def import_torchvision(path: str, config: str, classes: list[str] | None) -> Weights:
    state = unwrap_state_dict(safe_torch_load(path), path)
    spec = spec_from_state(state, config, path)
    model = VGG(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TorchvisionImportError(
            f"{path} is not a torchvision {CONFIGS[config].name} state_dict "
            f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); check --config"
        ) from None
    if classes is not None and len(classes) != spec.num_classes:
        raise TorchvisionImportError(
            f"--classes-file lists {len(classes)} classes but {path} has {spec.num_classes} outputs"
        )
    return Weights(spec, model.state_dict(), TORCHVISION_PREPROCESSING, classes, origin=f"torchvision:{path}")


def run(args: argparse.Namespace) -> int:
    try:
        classes = read_class_file(args.classes_file) if args.classes_file else None
        w = import_torchvision(args.file, args.config, classes)
    except (TorchvisionImportError, WeightsFormatError, OSError) as e:
        print(f"dist-vgg import: error: {e}", file=sys.stderr)
        return 2
    exported = _dist_vgg_export_note(args.file)
    if exported is not None and exported != TORCHVISION_PREPROCESSING:
        print(
            f"warning: {args.file} was written by `dist-vgg export` for weights that expect {exported}; "
            "importing it records torchvision's preprocessing instead, which will feed them the wrong inputs. "
            "Export with `--format dist-vgg` to keep a dist-vgg net's own preprocessing.",
            file=sys.stderr,
        )
    save_weights(args.out, w)
    print(
        f"wrote {args.out}: configuration {w.spec.config}, {w.spec.num_classes} classes, width {w.spec.width}, "
        f"crop {w.spec.crop}, torchvision preprocessing recorded (0-1 pixels, mean {list(TORCHVISION_PREPROCESSING.mean)}, "
        f"std {list(TORCHVISION_PREPROCESSING.std)})"
    )
    return 0


def _dist_vgg_export_note(path: str) -> Preprocessing | None:
    """The preprocessing named in the note `dist-vgg export` writes beside its files (None if there is none)."""
    note = Path(path).with_name(Path(path).name + ".json")
    try:
        return Preprocessing.from_dict(json.loads(note.read_text())["preprocessing"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
