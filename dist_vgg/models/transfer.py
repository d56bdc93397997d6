"""Init-from-A: copy the trained A net's layers into a deeper net, as the paper does for B, C, D and E.

The paper copies "the first four conv layers and the last three FC layers" of A. Position by position that
is impossible (D's second conv is 64→64; A has no such layer), so the mapping is *derived from Table 1*:

- `paper` (default, our interpretation): A's four convs — the first conv of blocks 1 and 2 and the first two
  convs of block 3 — go to the target's conv at the same (block, position in block); A's three FC layers go
  to the target's three FC layers. For B, C, D and E those target convs have exactly A's shapes.
- `all-compatible` (the alternative): every A conv goes to the target's conv at the same (block, position)
  where the shapes agree (all eight of A's convs for B, C, D, E), plus the three FC layers.

Every other layer keeps its fresh initialisation. The function checks every shape, copies under
`no_grad`, and returns a report that the trainer logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from dist_vgg.models.vgg import FC_KEYS, VGG, VGGSpec, conv_slots

MAPPINGS = ("paper", "all-compatible")
PAPER_A_CONVS = 4
"""The paper copies A's first four conv layers."""


class TransferError(ValueError):
    """A transfer that cannot be done: the message says which tensor or setting is wrong."""


@dataclass
class TransferReport:
    """What init-from-A did, layer by layer: `copied` maps target key → source key."""

    source: str
    target: str
    mapping: str
    copied: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"init-from-{self.source} → {self.target} (mapping '{self.mapping}', an interpretation of the paper)"
        ]
        out += [f"  copied  {t:<14} ← A {s}" for t, s in self.copied.items()]
        out += [f"  fresh   {t}" for t in self.fresh]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "mapping": self.mapping,
            "copied": dict(self.copied),
            "fresh": list(self.fresh),
        }


def layer_map(source: VGGSpec, target: VGGSpec, mapping: str = "paper") -> dict[str, str]:
    """Target module key → source module key, derived from the two Table 1 rows."""
    if mapping not in MAPPINGS:
        raise TransferError(f"unknown init-from-A mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    src_slots = conv_slots(source)
    if mapping == "paper":
        src_slots = src_slots[:PAPER_A_CONVS]
    by_position = {(s.block, s.index): s for s in conv_slots(target)}
    pairs: dict[str, str] = {}
    for s in src_slots:
        t = by_position.get((s.block, s.index))
        shapes_agree = t is not None and (t.in_channels, t.out_channels, t.kernel) == (
            s.in_channels,
            s.out_channels,
            s.kernel,
        )
        if shapes_agree:
            pairs[t.key] = s.key
        elif mapping == "paper":
            raise TransferError(
                f"A's conv {s.key} (block {s.block + 1}, position {s.index + 1}) has no shape-compatible "
                f"counterpart in {target.config}; the 'paper' mapping cannot be applied"
            )
    pairs.update({k: k for k in FC_KEYS})
    return pairs


def check_compatible(source: VGGSpec, target: VGGSpec) -> None:
    """Refuse transfers the paper does not describe, naming the setting that differs."""
    if source.config != "A":
        raise TransferError(
            f"init-from-A needs a checkpoint of configuration A (got {source.config!r}); "
            "train A first (recipe A-S256) or use --init-from with an A run"
        )
    for name in ("width", "num_classes", "crop"):
        a, b = getattr(source, name), getattr(target, name)
        if a != b:
            raise TransferError(
                f"cannot initialise {target.config} from A: {name} differs (A has {a}, {target.config} has {b}); "
                f"train A with {name}={b} or build {target.config} with {name}={a}"
            )


@torch.no_grad()
def transfer_from_a(
    target: VGG,
    source_state: Mapping[str, torch.Tensor],
    source_spec: VGGSpec,
    mapping: str = "paper",
) -> TransferReport:
    """Copy A's layers (`source_state`, a state_dict of an A net built from `source_spec`) into `target`
    according to `mapping`; the rest of `target` is left as it is (freshly initialised). Returns a report."""
    check_compatible(source_spec, target.spec)
    pairs = layer_map(source_spec, target.spec, mapping)
    report = TransferReport(source_spec.config, target.spec.config, mapping)
    modules = dict(target.named_modules())
    for t_key, s_key in pairs.items():
        for suffix in ("weight", "bias"):
            name = f"{s_key}.{suffix}"
            if name not in source_state:
                raise TransferError(
                    f"the A checkpoint has no tensor {name!r}; is it a complete A state_dict?"
                )
            src = source_state[name]
            dst = getattr(modules[t_key], suffix)
            if tuple(src.shape) != tuple(dst.shape):
                raise TransferError(
                    f"shape mismatch for {t_key}.{suffix}: A's {name} is {tuple(src.shape)}, "
                    f"{target.spec.config} needs {tuple(dst.shape)}"
                )
            dst.copy_(src)
        report.copied[t_key] = s_key
    all_keys = [s.key for s in conv_slots(target.spec)] + list(FC_KEYS)
    report.fresh = [k for k in all_keys if k not in report.copied]
    return report
