"""`dist-vgg export`: take trained weights elsewhere. `--format torchvision` writes a plain state_dict that
`torchvision.models.vgg11/13/16/19(num_classes=...)` loads with strict key matching (A/B/D/E; C and A-LRN
have no torchvision builder and keep dist-vgg's keys), with a note beside it saying which inputs the weights
expect — the paper's nets want RGB 0–255 minus the mean, not torchvision's usual 0–1 / std normalisation.
`--format dist-vgg` writes the self-describing weights file that `--init-from`, `eval` and `predict` accept."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dist_vgg.eval.sources import UnknownCheckpointError, build_model, load_any
from dist_vgg.weights import (
    TORCHVISION_PREPROCESSING,
    Preprocessing,
    Weights,
    WeightsFormatError,
    save_weights,
)

TORCHVISION_BUILDERS = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
"""Table 1 rows with a torchvision counterpart (same layers, same state_dict keys)."""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CKPT_OR_RUN", help="run folder, checkpoint (DDP or DeepSpeed) or weights"
    )
    p.add_argument("--format", required=True, choices=("torchvision", "dist-vgg"), help="what to write")
    p.add_argument("--out", required=True, help="output file, e.g. model.pth")


def preprocessing_note(w: Weights, builder: str | None) -> str:
    """Human-readable: which inputs these weights expect, and how to get them with torchvision's transforms."""
    pp = w.preprocessing
    if pp == TORCHVISION_PREPROCESSING:
        how = "torchvision's usual ImageNet transforms (ToTensor, Normalize with ImageNet mean/std) fit these weights."
    else:
        mean01 = [round(m * pp.scale / 255.0, 6) for m in pp.mean]
        std01 = [round(s * pp.scale / 255.0, 8) for s in pp.std]
        how = (
            f"These weights expect {pp.channel_order} pixels x = (pixel·{pp.scale:g} − mean) / std on 0–255 pixels, "
            f"mean {list(pp.mean)}, std {list(pp.std)} (the paper's input: only the mean subtracted). "
            "torchvision's usual transforms (ToTensor + Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, "
            "0.225])) would feed them the WRONG inputs. Use ToTensor() followed by "
            f"Normalize(mean={mean01}, std={std01}) instead."
        )
    load = (
        f"torchvision.models.{builder}(num_classes={w.spec.num_classes}).load_state_dict(torch.load(PATH))"
        if builder
        else f"configuration {w.spec.config} has no torchvision builder: the keys are dist-vgg's "
        "(features.N / classifier.0/3/6 with the LRN layer or 1×1 convs shifting the feature indices)"
    )
    shape = ""
    if builder and (w.spec.width != 1.0 or w.spec.crop != 224):
        shape = (
            f" Note: this net has width {w.spec.width} and crop {w.spec.crop}; torchvision's builders make width 1 "
            "and a 7×7 FC-6 input (crop 224), so the keys match but the tensor shapes do not."
        )
    return f"{how} Load: {load}.{shape}"


def run(args: argparse.Namespace) -> int:
    try:
        w = load_any(args.checkpoint)
        build_model(w)  # refuses weights that do not fit their own spec before anything is written
    except (UnknownCheckpointError, WeightsFormatError, ValueError) as e:
        print(f"dist-vgg export: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "dist-vgg":
        save_weights(out, w)
        print(
            f"wrote {out} (dist-vgg weights: {w.spec.config}, {w.spec.num_classes} classes, preprocessing recorded)"
        )
        return 0
    builder = TORCHVISION_BUILDERS.get(w.spec.config)
    state = {k: v.detach().cpu().contiguous() for k, v in w.state_dict.items()}
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    note = preprocessing_note(w, builder)
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(
        json.dumps(
            {
                "config": w.spec.config,
                "torchvision_builder": builder,
                "num_classes": w.spec.num_classes,
                "width": w.spec.width,
                "crop": w.spec.crop,
                "preprocessing": _pp_dict(w.preprocessing),
                "classes": w.classes,
                "origin": w.origin,
                "note": note,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out} (plain state_dict, {len(state)} tensors) and {sidecar}")
    print(note)
    return 0


def _pp_dict(pp: Preprocessing) -> dict:
    return {"mean": list(pp.mean), "std": list(pp.std), "scale": pp.scale, "channel_order": pp.channel_order}
