"""Paper Table 1 as data: every configuration is one row, and everything else (layers, the dense head,
init-from-A, parameter counts, receptive fields) is derived from these rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    """One convolution of a block: `channels` outputs at width 1, a `kernel`×`kernel` window, stride 1,
    'same' padding (1 for 3×3, 0 for 1×1), followed by a ReLU."""

    channels: int
    kernel: int = 3


@dataclass(frozen=True)
class VGGConfig:
    """One row of Table 1: five blocks of convs, each block followed by 2×2 max-pooling, then FC-4096,
    FC-4096 and FC-classes. `lrn` puts AlexNet's local response normalisation after the first conv."""

    name: str
    blocks: tuple[tuple[Conv, ...], ...]
    lrn: bool = False

    @property
    def weight_layers(self) -> int:
        """Conv layers plus the three FC layers: the paper's "11 weight layers" etc."""
        return sum(len(b) for b in self.blocks) + 3


def _block(*channels: int | str) -> tuple[Conv, ...]:
    """`_block(256, 256, "1x1:256")` → three convs; the string form marks a 1×1 conv."""
    convs = []
    for c in channels:
        if isinstance(c, str):
            kind, _, width = c.partition(":")
            if kind != "1x1":
                raise ValueError(f"unknown conv spec {c!r}")
            convs.append(Conv(int(width), kernel=1))
        else:
            convs.append(Conv(c))
    return tuple(convs)


CONFIGS: dict[str, VGGConfig] = {
    "A": VGGConfig("A", (_block(64), _block(128), _block(256, 256), _block(512, 512), _block(512, 512))),
    "A-LRN": VGGConfig(
        "A-LRN",
        (_block(64), _block(128), _block(256, 256), _block(512, 512), _block(512, 512)),
        lrn=True,
    ),
    "B": VGGConfig(
        "B", (_block(64, 64), _block(128, 128), _block(256, 256), _block(512, 512), _block(512, 512))
    ),
    "C": VGGConfig(
        "C",
        (
            _block(64, 64),
            _block(128, 128),
            _block(256, 256, "1x1:256"),
            _block(512, 512, "1x1:512"),
            _block(512, 512, "1x1:512"),
        ),
    ),
    "D": VGGConfig(
        "D",
        (
            _block(64, 64),
            _block(128, 128),
            _block(256, 256, 256),
            _block(512, 512, 512),
            _block(512, 512, 512),
        ),
    ),
    "E": VGGConfig(
        "E",
        (
            _block(64, 64),
            _block(128, 128),
            _block(256, 256, 256, 256),
            _block(512, 512, 512, 512),
            _block(512, 512, 512, 512),
        ),
    ),
}

FC_WIDTH = 4096
"""Width of FC-6 and FC-7 at width 1."""

POOLS = 5
"""Five 2×2 stride-2 poolings: the feature map is input/32."""

LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0
"""AlexNet's LRN hyper-parameters (the paper uses them for A-LRN)."""


def get_config(name: str) -> VGGConfig:
    """Look a configuration up by its Table 1 name; the error lists the valid names."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown VGG configuration {name!r}; choose one of {', '.join(CONFIGS)}") from None
