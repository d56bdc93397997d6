"""Weight initialisation schemes.

- `paper`: N(0, σ=0.01) weights, zero biases. The paper writes "variance 10^-2"; the usual reading, and
  Caffe's filler, is a *standard deviation* of 0.01.
- `glorot`: Glorot & Bengio (2010) uniform, zero biases — the paper's post-submission note says it trains
  the deep nets without pre-training A.
- `paper-width-corrected`: for narrow nets. Each layer's weights get σ = 0.01·√(full fan-in / fan-in), where
  "full" is the same layer of the paper's network (width 1, crop 224), so each layer keeps the variance gain
  σ²·fan-in it has in the full-size net. Without it a width-1/8, crop-64 A starts with logits of std ≈ 2e-8
  and never leaves chance; the tiny recipes use this scheme.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dist_vgg.models.table import FC_WIDTH
from dist_vgg.models.vgg import FC_KEYS, VGG, VGGSpec, conv_slots

PAPER_STD = 0.01
SCHEMES = ("paper", "paper-width-corrected", "glorot")


def full_fan_ins(spec: VGGSpec) -> dict[str, int]:
    """Fan-in of every weight layer (by module key) in the paper's full-size version of `spec`."""
    full = VGGSpec(spec.config, spec.num_classes, width=1.0, crop=224, dropout=spec.dropout)
    fans = {s.key: s.in_channels * s.kernel**2 for s in conv_slots(full)}
    last = conv_slots(full)[-1].out_channels
    fc_ins = (last * full.feature_size**2, FC_WIDTH, FC_WIDTH)
    fans.update(dict(zip(FC_KEYS, fc_ins)))
    return fans


def layer_std(scheme: str, fan_in: int, full_fan_in: int) -> float:
    if scheme == "paper":
        return PAPER_STD
    if scheme == "paper-width-corrected":
        return PAPER_STD * math.sqrt(full_fan_in / fan_in)
    raise ValueError(f"no normal std for scheme {scheme!r}")


@torch.no_grad()
def initialise(
    model: VGG, scheme: str = "paper", generator: torch.Generator | None = None, only: set[str] | None = None
) -> None:
    """Initialise `model`'s conv and FC layers in place with `scheme` (see module doc).
    `only` restricts it to the given module keys (used after a partial transfer)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    fans = full_fan_ins(model.spec)
    for key, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or (only is not None and key not in only):
            continue
        w = module.weight
        if scheme == "glorot":
            fan_in = w[0].numel()
            fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w.uniform_(-bound, bound, generator=generator)
        else:
            w.normal_(0.0, layer_std(scheme, w[0].numel(), fans[key]), generator=generator)
        module.bias.zero_()
