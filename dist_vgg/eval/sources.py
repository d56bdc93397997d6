"""Where evaluation, export and predict get their weights: a run folder, a checkpoint (DDP or DeepSpeed ZeRO)
or a self-describing weights file, all turned into one `Weights` by `dist_vgg.checkpoint.load_weights`.
Reading goes through `torch.load(weights_only=True)`, so a file whose pickle would run code is refused."""

from __future__ import annotations

from pathlib import Path

from dist_vgg.checkpoint import CheckpointError, load_weights
from dist_vgg.models.vgg import VGG
from dist_vgg.weights import Weights, WeightsFormatError


class UnknownCheckpointError(ValueError):
    """Neither a run folder, a checkpoint nor a weights file; the message names the path and what is accepted."""


ACCEPTED = (
    "a run folder, a checkpoint folder or file written by `dist-vgg train` (DDP or DeepSpeed), or a weights "
    "file written by `dist-vgg export --format dist-vgg` / `dist-vgg import`"
)


def load_any(path: str | Path) -> Weights:
    """The weights at `path`, whatever dist-vgg wrote there."""
    path = Path(path)
    if not path.exists():
        raise UnknownCheckpointError(f"{path} does not exist; expected {ACCEPTED}")
    try:
        return load_weights(path)
    except (WeightsFormatError, CheckpointError) as e:
        raise _unknown(path, e) from None


def _unknown(path: Path, e: Exception) -> Exception:
    """A refused pickle keeps its own message (it is a safety refusal, not a format question)."""
    if isinstance(e, WeightsFormatError) and "could run code" in str(e):
        return e
    return UnknownCheckpointError(f"{path}: unknown checkpoint format ({e}); expected {ACCEPTED}")


def build_model(w: Weights) -> VGG:
    """The network `w` describes, with its weights, in eval mode (dropout off)."""
    model = VGG(w.spec)
    try:
        missing, unexpected = model.load_state_dict(w.state_dict, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise UnknownCheckpointError(
            f"weights from {w.origin or 'the checkpoint'} do not fit configuration {w.spec.config} "
            f"(width {w.spec.width}, {w.spec.num_classes} classes): {str(e).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise UnknownCheckpointError(
            f"weights from {w.origin or 'the checkpoint'} do not fit configuration {w.spec.config}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval()


def train_scale(w: Weights) -> str:
    """The training scale S recorded with the weights ('256', '256-512'), or '?' when unknown."""
    for key in ("train_scale", "S", "scale"):
        if key in w.extra and w.extra[key] not in (None, ""):
            return str(w.extra[key])
    aug = w.extra.get("augment") if isinstance(w.extra.get("augment"), dict) else None
    if aug and "scale_min" in aug:
        lo, hi = aug["scale_min"], aug.get("scale_max", aug["scale_min"])
        return str(lo) if lo == hi else f"{lo}-{hi}"
    return "?"
