"""The checkpoint format, atomic writes and commit markers; `load_weights` for eval, export and `--init-from`.

Sits below both the trainer and evaluation: it imports neither. Layout inside a run folder:

    RUN/checkpoints/step-00001200/rank-00000.pt   model, optimiser, scheduler, scaler, step/epoch, model spec,
                                                  resolved config, preprocessing + rank 0's RNG and data position
    RUN/checkpoints/step-00001200/rank-00001.pt   rank 1's RNG states and data position (one file per rank)
    RUN/checkpoints/step-00001200/deepspeed/      DeepSpeed's own files (DeepSpeed engine only)
    RUN/checkpoints/step-00001200/COMMITTED       written by rank 0 after a barrier, once every rank's part is
                                                  on disk: only committed checkpoints count
    RUN/final -> checkpoints/step-NNNNNNNN        the checkpoint written when training finished

Every file is written under a temporary name, fsynced, then renamed, so a crash never leaves a torn file under
a real name. Our files hold only tensors and plain types and load with `torch.load(weights_only=True)`: a file
that holds a pickled object that could run code is refused. DeepSpeed's loader unpickles, so the trainer
resumes DeepSpeed state only from the run's own folder; everything brought in from outside goes through
`load_weights`, which never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from dist_vgg.models.vgg import VGGSpec
from dist_vgg.weights import (
    WEIGHTS_FORMAT,
    Preprocessing,
    Weights,
    WeightsFormatError,
    load_weights_file,
    safe_torch_load,
)

CHECKPOINT_FORMAT = "dist-vgg-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS = "checkpoints"
COMMITTED = "COMMITTED"
FINAL = "final"
DEEPSPEED_DIR = "deepspeed"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the path and what to do."""


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def rank_file(ckpt_dir: str | Path, rank: int) -> Path:
    return Path(ckpt_dir) / f"rank-{rank:05d}.pt"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """`torch.save` under a temporary name, fsync, rename, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def save_rank_part(ckpt_dir: Path, rank: int, payload: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(
        {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "rank": rank, **payload},
        rank_file(ckpt_dir, rank),
    )


def commit(ckpt_dir: Path, info: dict) -> None:
    """Mark a checkpoint complete (rank 0, after a barrier that follows every rank's write)."""
    atomic_write_bytes(ckpt_dir / COMMITTED, (json.dumps({**info, "unix_time": time.time()}) + "\n").encode())


def is_committed(ckpt_dir: Path) -> bool:
    return (ckpt_dir / COMMITTED).is_file()


def commit_info(ckpt_dir: Path) -> dict:
    return json.loads((ckpt_dir / COMMITTED).read_text())


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith("step-"):
        return None
    try:
        return int(name[5:])
    except ValueError:
        return None


def committed_checkpoints(run_dir: str | Path) -> list[Path]:
    """Committed checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None and is_committed(p)]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def latest_committed(run_dir: str | Path) -> Path | None:
    found = committed_checkpoints(run_dir)
    return found[-1] if found else None


def remove_uncommitted(run_dir: str | Path) -> list[Path]:
    """Delete checkpoint folders without a commit marker (a save interrupted by a crash). Rank 0, at start."""
    root = Path(run_dir) / CHECKPOINTS
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and _step_of(p) is not None and not is_committed(p):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def final_checkpoint(run_dir: str | Path) -> Path | None:
    link = Path(run_dir) / FINAL
    if link.is_symlink() or link.exists():
        target = link.resolve()
        return target if is_committed(target) else None
    return None


def mark_final(run_dir: str | Path, ckpt_dir: Path) -> None:
    """Point RUN/final at the finished run's checkpoint (atomically replaced symlink)."""
    link = Path(run_dir) / FINAL
    tmp = link.with_name(f".{FINAL}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(ckpt_dir, link.parent))
    tmp.replace(link)
    _fsync_dir(link.parent)


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` committed checkpoints; never the final one."""
    keep = final_checkpoint(run_dir)
    found = committed_checkpoints(run_dir)
    removed = []
    for p in found[: max(0, len(found) - keep_last)]:
        if keep is not None and p.resolve() == keep:
            continue
        (p / COMMITTED).unlink()  # uncommit first: a half-deleted folder never counts
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def load_rank_part(ckpt_dir: Path, rank: int) -> dict:
    path = rank_file(ckpt_dir, rank)
    if not path.is_file():
        raise CheckpointError(
            f"{ckpt_dir} has no part for rank {rank} ({path.name}); is the checkpoint complete?"
        )
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dist-vgg checkpoint file")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}, this dist-vgg reads {CHECKPOINT_VERSION}"
        )
    return payload


# ---------------------------------------------------------------------------------------------- weights


def _weights_from_payload(payload: dict, origin: str) -> Weights:
    if "model" not in payload or "spec" not in payload:
        raise WeightsFormatError(
            f"{origin} is rank {payload.get('rank')}'s part of a checkpoint and holds no weights; "
            "pass the checkpoint folder or its rank-00000.pt"
        )
    pre = payload.get("preprocessing") or {"mean": (0.0, 0.0, 0.0)}
    extra: dict = {
        "step": payload.get("step"),
        "epoch": payload.get("epoch"),
        "recipe": payload.get("recipe"),
    }
    augment = (payload.get("config") or {}).get("augment")
    if isinstance(augment, dict):
        extra["augment"] = augment
        scale = train_scale_label(augment)
        if scale:
            extra["train_scale"] = scale
    return Weights(
        VGGSpec.from_dict(payload["spec"]),
        payload["model"],
        Preprocessing.from_dict(pre),
        payload.get("classes"),
        origin,
        extra,
    )


def train_scale_label(augment: dict) -> str:
    """The training scale S of a run's augment section: "256" for a fixed S, "256-512" for scale jittering
    (what evaluation prints in its "train S" column); "" when the section does not say."""
    lo, hi = augment.get("scale_min"), augment.get("scale_max", augment.get("scale_min"))
    if lo is None:
        return ""
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _deepspeed_weights(ds_dir: Path, spec_source: Path | None) -> Weights:
    """Weights of a bare DeepSpeed folder, read weights-only (its model file holds `module` tensors)."""
    files = sorted(ds_dir.rglob("mp_rank_00_model_states.pt"))
    if not files:
        raise WeightsFormatError(f"{ds_dir} holds no DeepSpeed model states (mp_rank_00_model_states.pt)")
    payload = safe_torch_load(files[-1])
    if not isinstance(payload, dict) or "module" not in payload:
        raise WeightsFormatError(f"{files[-1]} has no 'module' state dict")
    if spec_source is None:
        raise WeightsFormatError(
            f"{ds_dir}: a DeepSpeed folder does not say which network it holds; pass the dist-vgg checkpoint "
            "folder above it (its rank-00000.pt names the model spec)"
        )
    part = load_rank_part(spec_source, 0)
    return _weights_from_payload({**part, "model": payload["module"]}, str(ds_dir))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (its final checkpoint, else its latest committed one) or a checkpoint folder → the
    committed checkpoint folder it means."""
    path = Path(path)
    if (path / CHECKPOINTS).is_dir() or (path / FINAL).exists():
        found = final_checkpoint(path) or latest_committed(path)
        if found is None:
            raise CheckpointError(f"run folder {path} holds no committed checkpoint yet")
        return found
    if _step_of(path) is not None or (path / COMMITTED).exists() or rank_file(path, 0).exists():
        if not is_committed(path):
            raise CheckpointError(
                f"checkpoint {path} has no {COMMITTED} marker: it was interrupted before every rank's part "
                "was written; use an earlier committed checkpoint"
            )
        return path
    raise CheckpointError(f"{path} is neither a run folder nor a checkpoint folder")


def load_weights(path: str | Path) -> Weights:
    """Model weights from anything dist-vgg writes: a run folder (final, else latest committed checkpoint),
    a checkpoint folder, one of its files, a DeepSpeed checkpoint folder of a run, or a self-describing weights
    file. Never unpickles (weights_only=True); unknown formats get an error that names the path."""
    path = Path(path)
    if not path.exists():
        raise WeightsFormatError(f"{path} does not exist")
    if path.is_dir():
        if path.name == DEEPSPEED_DIR or any(path.glob("*/mp_rank_00_model_states.pt")):
            parent = path.parent if path.name == DEEPSPEED_DIR else None
            return _deepspeed_weights(path, parent if parent and is_committed(parent) else None)
        ckpt = resolve_checkpoint(path)
        part = load_rank_part(ckpt, 0)
        if "model" not in part and (ckpt / DEEPSPEED_DIR).is_dir():
            return _deepspeed_weights(
                ckpt / DEEPSPEED_DIR, ckpt
            )  # a DeepSpeed run: its own folder holds them
        return _weights_from_payload(part, str(ckpt))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save's zip container
        raise WeightsFormatError(
            f"{path} is not a readable torch file (not a zip archive written by torch.save); pass a run folder, "
            "a checkpoint folder or file, or a dist-vgg weights file"
        )
    payload = safe_torch_load(path)
    if isinstance(payload, dict) and payload.get("format") == WEIGHTS_FORMAT:
        return load_weights_file(path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return _weights_from_payload(payload, str(path))
    raise WeightsFormatError(
        f"{path} is neither a dist-vgg checkpoint nor a dist-vgg weights file; convert torchvision weights "
        "with `dist-vgg import`"
    )
