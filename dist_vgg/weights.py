"""The self-describing weights file (`dist-vgg export --format dist-vgg`, `dist-vgg import`): weights + model
spec + class list + the input preprocessing the weights expect. `--init-from`, `eval` and `predict` accept it.

Loaded with `torch.load(weights_only=True)`: a file holding a pickled object that runs code is refused.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dist_vgg.models.vgg import VGGSpec

WEIGHTS_FORMAT = "dist-vgg-weights"
WEIGHTS_VERSION = 1


class WeightsFormatError(ValueError):
    """A file that is not (or not safely) a weights file; the message names the file and what to do."""


@dataclass(frozen=True)
class Preprocessing:
    """How pixels must be prepared for these weights: RGB, x = (pixel·scale − mean) / std, with `pixel` in
    0–255. dist-vgg's own nets (the paper's): scale 1, the training set's mean RGB, std 1. torchvision's
    released VGGs: scale 1/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    channel_order: str = "RGB"

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            tuple(d["mean"]),
            tuple(d.get("std", (1.0, 1.0, 1.0))),
            float(d.get("scale", 1.0)),
            d.get("channel_order", "RGB"),
        )


TORCHVISION_PREPROCESSING = Preprocessing(
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1.0 / 255.0
)


@dataclass
class Weights:
    """Everything needed to evaluate or warm-start from a trained net, independent of how it was trained."""

    spec: VGGSpec
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    classes: list[str] | None = None
    origin: str = ""
    extra: dict = field(default_factory=dict)


def save_weights(path: str | Path, w: Weights) -> None:
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "spec": w.spec.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in w.state_dict.items()},
        "preprocessing": asdict(w.preprocessing),
        "classes": w.classes,
        "origin": w.origin,
        "extra": w.extra,
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def safe_torch_load(path: str | Path) -> object:
    """`torch.load` with `weights_only=True`, turning a refusal into an error that says why."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsFormatError(f"{path} does not exist") from None
    except pickle.UnpicklingError as e:
        text = str(e)
        # weights_only refuses globals it does not allow; anything else is simply not a torch file.
        if "Unsupported global" in text or "Weights only load failed" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise WeightsFormatError(
                f"{path} holds pickled objects that could run code; refusing to load it"
                + (f" ({detail})" if detail else "")
                + ". Only load files you trust, converted with `dist-vgg import`."
            ) from None
        raise WeightsFormatError(
            f"{path} is not a readable torch file ({text.splitlines()[0] if text else e!r})"
        ) from None
    except Exception as e:  # a text file, a truncated zip...: torch raises many kinds
        raise WeightsFormatError(f"{path} is not a readable torch file ({type(e).__name__}: {e})") from None


def load_weights_file(path: str | Path) -> Weights:
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsFormatError(f"{path} is not a dist-vgg weights file")
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsFormatError(
            f"{path} has weights format version {payload.get('version')}, expected {WEIGHTS_VERSION}"
        )
    return Weights(
        VGGSpec.from_dict(payload["spec"]),
        payload["state_dict"],
        Preprocessing.from_dict(payload["preprocessing"]),
        payload.get("classes"),
        payload.get("origin", str(path)),
        payload.get("extra", {}),
    )
