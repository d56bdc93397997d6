"""The dense (fully convolutional) head of section 3.2: FC-6 becomes a (crop/32)×(crop/32) conv, FC-7 and
FC-8 become 1×1 convs, all *sharing* the FC weights (views, not copies), so a trained model evaluates whole
images of any size ≥ crop and returns a class-score map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dist_vgg.models.vgg import VGG


class DenseVGG(nn.Module):
    """Wraps a `VGG`; `forward` returns class scores N × classes × h × w (h = w = 1 on a crop-sized input,
    where it equals the FC model's logits)."""

    def __init__(self, vgg: VGG) -> None:
        super().__init__()
        self.vgg = vgg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.vgg.spec
        if min(x.shape[-2:]) < spec.crop:
            raise ValueError(
                f"dense evaluation needs inputs at least {spec.crop} on each side (got {tuple(x.shape[-2:])}); "
                "rescale to a shorter side Q >= crop"
            )
        f = self.vgg.features(x)
        fc6, fc7, fc8 = (self.vgg.classifier[i] for i in (0, 3, 6))
        k = spec.feature_size
        # torch.flatten(N, C, H, W) orders FC-6's inputs as (C, H, W): the same view gives its conv kernel.
        w6 = fc6.weight.view(fc6.out_features, f.shape[1], k, k)
        y = F.relu(F.conv2d(f, w6, fc6.bias))
        y = F.relu(F.conv2d(y, fc7.weight[:, :, None, None], fc7.bias))
        return F.conv2d(y, fc8.weight[:, :, None, None], fc8.bias)


def dense_logits(model: VGG, x: torch.Tensor) -> torch.Tensor:
    """Spatially averaged (sum-pooled, then scaled) class scores of the dense head: N × classes."""
    return DenseVGG(model)(x).mean(dim=(-2, -1))
