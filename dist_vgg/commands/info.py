"""`dist-vgg info`: the paper's Tables 1–2 generated from the code (layers, parameters, forward GMACs at 224,
receptive field after each block), so the docs can never drift from the model builder."""

from __future__ import annotations

import argparse
import json

from dist_vgg.models.geometry import block_receptive_fields, forward_macs, layers, parameter_count
from dist_vgg.models.table import CONFIGS
from dist_vgg.models.vgg import VGGSpec


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", choices=list(CONFIGS), action="append", help="only these configurations")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1 = the paper)")
    p.add_argument("--crop", type=int, default=224, help="input size (default 224)")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")


def describe(spec: VGGSpec) -> dict:
    table = spec.table
    return {
        "config": spec.config,
        "weight_layers": table.weight_layers,
        "blocks": [
            " ".join(f"conv{c.kernel}-{spec.channels(c.channels)}" for c in block) + " maxpool"
            for block in table.blocks
        ],
        "lrn_after_first_conv": table.lrn,
        "fc": [spec.fc_width, spec.fc_width, spec.num_classes],
        "parameters": parameter_count(spec),
        "forward_gmacs": round(forward_macs(spec) / 1e9, 2),
        "receptive_field_per_block": block_receptive_fields(spec),
        "layers": [
            {
                "key": x.key,
                "kind": x.kind,
                "in": x.in_channels,
                "out": x.out_channels,
                "params": x.params,
                "receptive_field": x.receptive_field,
            }
            for x in layers(spec)
        ],
    }


def run(args: argparse.Namespace) -> int:
    names = args.config or list(CONFIGS)
    rows = [describe(VGGSpec(n, args.classes, args.width, args.crop)) for n in names]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"VGG configurations (paper Tables 1-2) at width {args.width}, input {args.crop}², {args.classes} classes"
    )
    for r in rows:
        print(
            f"\n{r['config']}: {r['weight_layers']} weight layers"
            + (" (LRN after conv 1)" if r["lrn_after_first_conv"] else "")
        )
        for i, (b, rf) in enumerate(zip(r["blocks"], r["receptive_field_per_block"]), 1):
            print(f"  block {i}: {b:<48} receptive field {rf}×{rf}")
        print(f"  FC-{r['fc'][0]} FC-{r['fc'][1]} FC-{r['fc'][2]} soft-max")
        print(f"  parameters {r['parameters']:,}   forward {r['forward_gmacs']} GMACs")
    return 0
