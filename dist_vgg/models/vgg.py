"""One builder for the whole family: a Table 1 row → torch modules with torchvision's key layout.

`features.N` / `classifier.N` indices match torchvision's `vgg11/13/16/19` for A/B/D/E, so state_dicts move
between the two with a strict `load_state_dict`. A-LRN's LRN layer and C's 1×1 convs shift the indices of
the layers after them (those two configurations have no torchvision counterpart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from dist_vgg.models.table import (
    FC_WIDTH,
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    POOLS,
    VGGConfig,
    get_config,
)


@dataclass(frozen=True)
class VGGSpec:
    """Everything that fixes a network's architecture; saved in every checkpoint and forced back on resume."""

    config: str
    """Table 1 name: A, A-LRN, B, C, D or E."""
    num_classes: int = 1000
    """Size of FC-8."""
    width: float = 1.0
    """Multiplier on every conv and FC width (1.0 = the paper; 1/8 for CPU tests and the demo)."""
    crop: int = 224
    """Training input size; FC-6 sees a (crop/32)×(crop/32) map."""
    dropout: float = 0.5
    """Dropout after FC-6 and FC-7 (the paper's 0.5)."""

    def __post_init__(self) -> None:
        get_config(self.config)
        if not self.width > 0:
            raise ValueError(f"width must be > 0 (got {self.width}); 1.0 is the paper's network")
        if self.crop <= 0 or self.crop % 2**POOLS:
            raise ValueError(
                f"crop must be a positive multiple of {2**POOLS} (got {self.crop}): "
                f"VGG pools {POOLS} times; e.g. 224, 64 or 32"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (got {self.num_classes})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {self.dropout})")

    @property
    def table(self) -> VGGConfig:
        return get_config(self.config)

    def channels(self, full: int) -> int:
        """A width-1 channel count scaled by `width` (at least 1)."""
        return max(1, round(full * self.width))

    @property
    def fc_width(self) -> int:
        return self.channels(FC_WIDTH)

    @property
    def feature_size(self) -> int:
        """Side of the last feature map at the training crop, i.e. FC-6's kernel in the dense head."""
        return self.crop // 2**POOLS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VGGSpec:
        known = {k: d[k] for k in ("config", "num_classes", "width", "crop", "dropout") if k in d}
        return cls(**known)


@dataclass(frozen=True)
class ConvSlot:
    """Where one conv of the table sits: its block and position in the block, and its `features` index."""

    block: int
    index: int
    feature_index: int
    in_channels: int
    out_channels: int
    kernel: int

    @property
    def key(self) -> str:
        return f"features.{self.feature_index}"


def conv_slots(spec: VGGSpec) -> list[ConvSlot]:
    """The convs of `spec` in order, with the `features` indices the builder gives them."""
    slots, index, in_ch = [], 0, 3
    for b, block in enumerate(spec.table.blocks):
        for i, conv in enumerate(block):
            out_ch = spec.channels(conv.channels)
            slots.append(ConvSlot(b, i, index, in_ch, out_ch, conv.kernel))
            index += 2  # conv + ReLU
            if spec.table.lrn and b == 0 and i == 0:
                index += 1  # LRN after the first conv's ReLU, as in AlexNet
            in_ch = out_ch
        index += 1  # max-pool
    return slots


FC_KEYS = ("classifier.0", "classifier.3", "classifier.6")
"""FC-6, FC-7, FC-8 in torchvision's classifier layout (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)."""


class VGG(nn.Module):
    """A VGG net with torchvision's `features` / `classifier` layout. No adaptive pooling: the input must be
    `spec.crop` square for the FC head; the dense head (`dist_vgg.models.dense`) takes any size ≥ crop."""

    def __init__(self, spec: VGGSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        slots = conv_slots(spec)
        for n, slot in enumerate(slots):
            layers.append(
                nn.Conv2d(slot.in_channels, slot.out_channels, slot.kernel, padding=slot.kernel // 2)
            )
            layers.append(nn.ReLU(inplace=True))
            if spec.table.lrn and n == 0:
                layers.append(_alexnet_lrn())
            last_in_block = n + 1 == len(slots) or slots[n + 1].block != slot.block
            if last_in_block:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        c_last = slots[-1].out_channels
        fc = spec.fc_width
        self.classifier = nn.Sequential(
            nn.Linear(c_last * spec.feature_size**2, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.dropout),
            nn.Linear(fc, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if f.shape[-2:] != (self.spec.feature_size, self.spec.feature_size):
            raise ValueError(
                f"the FC head needs {self.spec.crop}×{self.spec.crop} inputs (got {tuple(x.shape[-2:])}); "
                "use dist_vgg.models.dense.DenseVGG for whole images"
            )
        return self.classifier(torch.flatten(f, 1))


def _alexnet_lrn() -> nn.LocalResponseNorm:
    """AlexNet's LRN: b = a / (k + α·Σ a²)^β over 5 channels. PyTorch's LocalResponseNorm (like Caffe's)
    divides α by the window size (it scales the window *mean*), so we pass α·size to get AlexNet's *sum*."""
    return nn.LocalResponseNorm(size=LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


def build_vgg(
    config: str,
    num_classes: int = 1000,
    width: float = 1.0,
    crop: int = 224,
    dropout: float = 0.5,
) -> VGG:
    """Build configuration `config` of Table 1 (A, A-LRN, B, C, D, E). Weights are PyTorch's defaults:
    apply `dist_vgg.models.init.initialise` for the paper's initialisation."""
    return VGG(VGGSpec(config, num_classes, width, crop, dropout))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
