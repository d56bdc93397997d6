"""The reader-based DALI training loader (`data.dali_source=reader`): DALI reads the shards itself.

`fn.readers.webdataset` reads every shard of the training split through its `.idx` index, split by sample
among the ranks (`shard_id`/`num_shards`; with `stick_to_shard=False` a rank moves to the next rank's range
every epoch, so it never reads the same subset two epochs running), shuffled through a buffer of
`data.shuffle_buffer` samples, seeded. Then, all as DALI operators: S per image uniform over the integers
[scale_min, scale_max] and a crop position (u, v) ~ U[0, 1]²; from the JPEG header (`peek_image_shape`) the
source box that becomes the crop×crop crop at anchor round(u · (rescaled side − crop)) of the image rescaled
to shorter side S (`augment.crop_box`, computed with DALI arithmetic); decode (`mixed` on GPU, `cpu`
otherwise) → resize that box to crop×crop (bilinear with antialiasing, the filter of every other path; equal
to rescaling the whole image to S and cropping, at a fraction of the cost) → flip with probability 1/2 →
subtract (mean − colour shift) and divide by std, the colour shift being AlexNet's eigvec · (α · eigval),
α ~ N(0, σ²) per component per image. Fixed S, no flip or σ = 0 leave the corresponding random operator
out of the graph. The graph is the same on both devices except the decoder's.

Exact epochs. DALI's epoch is its own: rank r reads shard range (r + epoch) mod world, ranges differ by one
sample, and `pad_last_batch=True` pads every range to ceil(ceil(N / world) / micro_batch) runs, equal on all
ranks, by repeating a sample already returned (measured: the padding always comes after all of the range's
real samples, whatever the shuffle buffer). The loader runs the pipeline for that whole DALI epoch on every
rank but yields only the first `batches_per_epoch = floor(N / (micro_batch · world))` batches, the trainer's
epoch on every path; so ranks never disagree on the count, and since every range holds at least
batches_per_epoch · micro_batch real samples a padded duplicate is never yielded. The price
(`ReaderPlan.discarded`): at most one decoded batch per rank per epoch thrown away — with
N = k · micro_batch · world + m (m < micro_batch · world) a range holds at most k · micro_batch + ceil(m / world)
≤ (k + 1) · micro_batch samples — holding the m left-over samples of the epoch and the padding.

Resume. The pipeline is built with `enable_checkpointing=True`; `state_dict()` stores `pipe.checkpoint()`
(as a uint8 tensor, taken after the batches already yielded: DALI keeps the checkpoint of each prefetched run and
returns the one of the last run handed out) with the epoch bookkeeping, and a restored pipeline continues
with exactly the batches an uninterrupted run would have produced. Without a checkpoint (a state saved by
another loader or another world size) the loader starts a fresh reader state for the epoch, a deterministic
function of (seed, epoch, rank), and skips the batches already consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dist_vgg.data.config import AugmentConfig, DataConfig
from dist_vgg.data.dali_pipeline import _to_torch
from dist_vgg.data.dataset import _missing_index
from dist_vgg.data.format import CLS, INDEX_VERSION, JPG, LABEL_DIGITS, Manifest, ShardFormatError, index_name
from dist_vgg.data.sampler import EpochPlan
from dist_vgg.data.train_loader import to_training_layout

log = logging.getLogger("dist_vgg.data")

READER_NAME = "reader"
"""The webdataset reader's name in the graph (for `reader_meta`)."""
READER_STREAM = 3
"""Seed-sequence tag of the reader path's seeds (sampler.PERMUTATION_STREAM = 1, AUGMENT_STREAM = 2)."""
_ASCII_ZERO = 48


@dataclass(frozen=True)
class ReaderPlan:
    """The trainer's epoch on top of DALI's sample sharding, for one (samples, micro_batch, world) layout."""

    samples: int
    micro_batch: int
    world_size: int

    def __post_init__(self) -> None:
        # The index path's plan raises the same clear error for a split smaller than one global batch.
        EpochPlan(self.samples, self.micro_batch, self.world_size, self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        """Batches every rank yields per epoch: `sampler.EpochPlan`'s, the trainer's epoch on every path."""
        return self.samples // (self.micro_batch * self.world_size)

    def shard_size(self, shard: int) -> int:
        """Samples in DALI's shard `shard`: [shard·N/world, (shard+1)·N/world), integer division."""
        n, w = self.samples, self.world_size
        return (shard + 1) * n // w - shard * n // w

    @property
    def runs_per_epoch(self) -> int:
        """Pipeline runs in one DALI epoch on every rank: the largest shard, padded to whole batches."""
        largest = -(-self.samples // self.world_size)
        return -(-largest // self.micro_batch)

    @property
    def discarded(self) -> int:
        """Decoded batches per rank per epoch that are not yielded: 0 or 1 (see the module docstring)."""
        return self.runs_per_epoch - self.batches_per_epoch

    def shard(self, rank: int, epoch: int) -> int:
        """The shard range rank reads in `epoch` (DALI moves every rank one range on per epoch)."""
        return (rank + epoch) % self.world_size

    def describe(self) -> str:
        used = self.batches_per_epoch * self.micro_batch * self.world_size
        return (
            f"epoch = {self.batches_per_epoch} batches of {self.micro_batch} per rank × {self.world_size} ranks "
            f"= {used} of {self.samples} samples; DALI runs {self.runs_per_epoch} batches per rank per epoch "
            f"(shard ranges of {self.shard_size(0)}–{-(-self.samples // self.world_size)} samples, padded) "
            f"and {self.discarded} per rank are decoded and discarded"
        )


def reader_shards(data: DataConfig, manifest: Manifest, staged_paths: list[Path] | None) -> list[Path]:
    """Every shard of the training split (all ranks read all shards: DALI shards by sample), each checked to
    exist with a matching `.idx` index beside it."""
    root = Path(data.path)
    entries = manifest.splits["train"].shards
    paths = staged_paths or manifest.shard_paths(root, "train")
    if not entries or manifest.splits["train"].samples == 0:
        raise ShardFormatError(f"{root} has no train shards in its manifest; re-run data_prep")
    for path, entry in zip(paths, entries, strict=True):
        if not path.is_file():
            raise ShardFormatError(
                f"shard {path} listed in {root}/manifest.json is missing; copy it back or re-run data_prep"
            )
        idx = path.with_name(index_name(path))
        try:
            with open(idx) as f:
                head = f.readline().split()
        except FileNotFoundError:
            raise _missing_index(idx, root) from None
        if len(head) != 2 or head[0] != INDEX_VERSION or head[1] != str(entry.samples):
            raise ShardFormatError(
                f"{idx} is not a {INDEX_VERSION} DALI index of {entry.samples} samples (the manifest's count); "
                f"recreate it with `python -m data_prep index {root}`"
            )
    return list(paths)


def derive_seed(seed: int, rank: int, epoch: int, role: int) -> int:
    """A 31-bit DALI seed for (seed, rank, the epoch the pipeline starts at, role)."""
    return int(np.random.SeedSequence([seed, rank, epoch, READER_STREAM, role]).generate_state(1)[0] >> 1)


def build_reader_graph(
    paths: list[Path],
    aug: AugmentConfig,
    *,
    batch_size: int,
    shard_id: int,
    num_shards: int,
    shuffle_buffer: int,
    seed: int,
    reader_seed: int,
    decoder: str,
    device_id: int | None,
    threads: int,
    checkpoint: bytes | None = None,
):  # -> (nvidia.dali.Pipeline, output names)
    """The reader graph (see the module docstring); outputs images (float CHW), labels (int64) and, where
    drawn, `scale` (S per image) and `flip` (0/1 per image). `checkpoint` restores a saved pipeline state."""
    import nvidia.dali.math as dmath
    from nvidia.dali import fn, pipeline_def, types

    if aug.mean_rgb is None or aug.pca_eigval is None or aug.pca_eigvec is None:
        raise ValueError(
            "augment config is not resolved: call dist_vgg.data.resolve_augment(aug, data) first"
        )
    names = ["images", "labels"] + (["scale"] if aug.jitter else []) + (["flip"] if aug.flip else [])
    mean = np.asarray(aug.mean_rgb, dtype=np.float32)
    std = [float(v) for v in aug.std_rgb or (1.0, 1.0, 1.0)]
    eigvec = np.asarray(aug.pca_eigvec, dtype=np.float32)
    eigval = np.asarray(aug.pca_eigval, dtype=np.float32)
    digits = np.array([10**k for k in reversed(range(LABEL_DIGITS))], dtype=np.int64)

    @pipeline_def
    def graph():
        jpegs, cls = fn.readers.webdataset(
            paths=[str(p) for p in paths],
            index_paths=[str(p.with_name(index_name(p))) for p in paths],
            ext=[JPG, CLS],
            missing_component_behavior="error",
            shard_id=shard_id,
            num_shards=num_shards,
            random_shuffle=True,
            initial_fill=shuffle_buffer,
            seed=reader_seed,
            pad_last_batch=True,
            stick_to_shard=False,
            name=READER_NAME,
        )
        # `.cls` is fixed-width zero-padded ASCII decimal (format.encode_label)
        labels = fn.reductions.sum(
            (fn.cast(cls, dtype=types.INT64) - _ASCII_ZERO) * types.Constant(digits), axes=0
        )
        if aug.jitter:  # S ~ U{scale_min, …, scale_max}, drawn per image
            scale = fn.random.uniform(values=[float(s) for s in range(aug.scale_min, aug.scale_max + 1)])
        else:
            scale = float(aug.scale_min)
        # the source box that becomes the crop of the image rescaled to shorter side S (augment.crop_box), from
        # the JPEG header: resizing only it equals rescaling the whole image and cropping, at a fraction of the cost
        shape = fn.cast(fn.peek_image_shape(jpegs, adjust_orientation=False), dtype=types.FLOAT)
        h, w = shape[0], shape[1]
        factor = scale / dmath.min(h, w)
        rh, rw = dmath.floor(h * factor + 0.5), dmath.floor(w * factor + 0.5)
        ay = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (rh - aug.crop) + 0.5)
        ax = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * (rw - aug.crop) + 0.5)
        sy, sx = h / rh, w / rw
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB, adjust_orientation=False)
        images = fn.resize(
            images,
            size=[aug.crop, aug.crop],
            roi_start=fn.stack(ay * sy, ax * sx),
            roi_end=fn.stack((ay + aug.crop) * sy, (ax + aug.crop) * sx),
            roi_relative=False,
            interp_type=types.INTERP_LINEAR,
            antialias=True,
        )
        if aug.color_shift_std > 0:  # AlexNet's PCA shift, 0–255 units: eigvec · (α · eigval)
            weighted = fn.random.normal(shape=[3], stddev=aug.color_shift_std) * types.Constant(eigval)
            col = [types.Constant(np.ascontiguousarray(eigvec[:, k])) for k in range(3)]
            shift = weighted[0] * col[0] + weighted[1] * col[1] + weighted[2] * col[2]
            offset = types.Constant(mean) - shift
        else:
            offset = [float(v) for v in mean]
        flip = fn.random.coin_flip(dtype=types.INT32) if aug.flip else 0
        images = fn.crop_mirror_normalize(
            images, mirror=flip, mean=offset, std=std, output_layout="CHW", dtype=types.FLOAT
        )
        outputs = [images, labels]
        if aug.jitter:
            outputs.append(fn.cast(scale, dtype=types.INT32))
        if aug.flip:
            outputs.append(flip)
        return tuple(outputs)

    pipe = graph(
        batch_size=batch_size,
        num_threads=threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=2,
        enable_checkpointing=True,
        checkpoint=checkpoint,
    )
    try:
        pipe.build()
    except RuntimeError as e:
        raise _reader_error(e, paths) from None
    return pipe, names


def _reader_error(error: RuntimeError, paths: list[Path]) -> Exception:
    """DALI's reader refuses a shard at build time (a sample without .jpg or .cls, a stale index) with a long
    C++ report; keep its one informative line and say what to do."""
    if "webdataset" not in str(error):
        return error
    lines = [line.strip() for line in str(error).splitlines()]
    after = lines[lines.index("encountered:") + 1 :] if "encountered:" in lines else lines
    reason = next((line for line in after if line), str(error))
    root = paths[0].parent.parent
    return ShardFormatError(
        f"DALI's webdataset reader refused the training shards in {paths[0].parent}: {reason}. Every sample "
        f"needs .{JPG} and .{CLS} members: re-run data_prep on this split (or, if only an index is stale, "
        f"`python -m data_prep index {root}`)"
    )


class DaliReaderLoader:
    """`TrainLoader` (see `loader.TrainLoader`) over DALI's webdataset reader, one pipeline kept across epochs.

    `last_draws` holds the S and flip per image of the batch last yielded (numpy; constants where the graph
    draws none), for tests and logs."""

    def __init__(
        self,
        paths: list[Path],
        aug: AugmentConfig,
        plan: ReaderPlan,
        *,
        rank: int,
        seed: int,
        shuffle_buffer: int,
        threads: int,
        decoder: str,
        device_id: int | None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} is outside world size {plan.world_size}")
        self.paths, self.aug, self.plan, self.rank, self.seed = paths, aug, plan, rank, seed
        self.shuffle_buffer, self.threads = shuffle_buffer, threads
        self.decoder, self.device_id = decoder, device_id
        self.device, self.dtype = device, dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.dali_device = torch.device("cuda", device_id) if device_id is not None else torch.device("cpu")
        self.batches_per_epoch = plan.batches_per_epoch
        self.name = f"dali webdataset reader (decoder on {'gpu' if decoder == 'mixed' else 'cpu'})"
        self.last_draws: dict[str, np.ndarray] = {}
        self._epoch = 0
        self._pipe = None
        self._names: list[str] = []
        self._origin = 0
        """Epoch the pipeline was first built for (fixes its shard_id and seeds; kept across restores)."""
        self._reader_epoch = 0
        """Epoch the pipeline is in, and runs it has done in it."""
        self._runs = 0
        self._pending: dict | None = None
        """A restored position not yet turned into a pipeline (built on the next iteration)."""

    # ------------------------------------------------------------------ the pipeline's position

    def _build(self, origin: int, checkpoint: bytes | None) -> None:
        self._pipe = None  # free the old pipeline's threads and buffers first
        self._pipe, self._names = build_reader_graph(
            self.paths,
            self.aug,
            batch_size=self.plan.micro_batch,
            shard_id=self.plan.shard(self.rank, origin),
            num_shards=self.plan.world_size,
            shuffle_buffer=self.shuffle_buffer,
            seed=derive_seed(self.seed, self.rank, origin, 0),
            reader_seed=derive_seed(self.seed, self.rank, origin, 1),
            decoder=self.decoder,
            device_id=self.device_id,
            threads=self.threads,
            checkpoint=checkpoint,
        )
        self._origin = origin

    def _fresh(self, epoch: int, skip: int = 0) -> None:
        self._build(epoch, None)
        self._reader_epoch, self._runs = epoch, 0
        self._advance(skip)

    def _advance(self, n: int) -> None:
        """Run and discard n batches (the padded tail of an epoch, or batches consumed before a resume)."""
        for _ in range(n):
            self._pipe.run()
            self._runs += 1

    def _ready(self, epoch: int) -> None:
        """Bring the pipeline to `epoch`: restore a saved state, finish the previous epoch's discarded tail, or
        (an epoch that does not follow the pipeline's) start a fresh reader state for `epoch`."""
        if self._pipe is None:
            pending, self._pending = self._pending, None
            if pending is None:
                self._fresh(epoch)
            elif pending["checkpoint"]:
                self._build(pending["origin"], pending["checkpoint"])
                self._reader_epoch, self._runs = pending["reader_epoch"], pending["reader_runs"]
            else:
                self._fresh(pending["epoch"], pending["position"])
        if self._reader_epoch + 1 == epoch:  # finish DALI's epoch, then its next one is ours
            self._advance(self.plan.runs_per_epoch - self._runs)
            self._reader_epoch, self._runs = epoch, 0
        if self._reader_epoch != epoch:
            log.info(
                "data: epoch %d does not follow the DALI reader's epoch %d: fresh reader state for epoch %d",
                epoch,
                self._reader_epoch,
                epoch,
            )
            self._fresh(epoch)

    # ------------------------------------------------------------------ TrainLoader

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._ready(self._epoch)
        while self._runs < self.batches_per_epoch:
            out = dict(zip(self._names, self._pipe.run(), strict=True))
            self._runs += 1  # counted before the yield: a checkpoint taken now includes this batch
            self.last_draws = self._draws(out)
            x, y = _to_torch(out["images"], self.dali_device), _to_torch(out["labels"], self.dali_device)
            yield to_training_layout(x, y, self.device, self.dtype, self.memory_format)
        # the rest of DALI's epoch (≤ 1 batch, padding included) is run and discarded when the next epoch starts

    def _draws(self, out: dict) -> dict[str, np.ndarray]:
        n = self.plan.micro_batch
        scale = _numpy(out["scale"]) if "scale" in out else np.full(n, self.aug.scale_min)
        flip = _numpy(out["flip"]).astype(bool) if "flip" in out else np.zeros(n, dtype=bool)
        return {"scale": scale, "flip": flip}

    def _position(self) -> tuple[int, int, int, int]:
        """(epoch of the pipeline, runs in it, batches of the selected epoch consumed, origin)."""
        if self._pipe is None and self._pending is not None:
            p = self._pending
            if p["checkpoint"]:
                return p["reader_epoch"], p["reader_runs"], p["position"], p["origin"]
            return p["epoch"], p["position"], p["position"], p["epoch"]
        if self._pipe is None:
            return self._epoch, 0, 0, self._epoch
        consumed = min(self._runs, self.batches_per_epoch) if self._reader_epoch == self._epoch else 0
        return self._reader_epoch, self._runs, consumed, self._origin

    def state_dict(self) -> dict:
        reader_epoch, runs, position, origin = self._position()
        if self._pipe is not None:
            checkpoint = bytes(self._pipe.checkpoint())
        elif self._pending is not None:
            checkpoint = self._pending["checkpoint"]
        else:
            checkpoint = b""
        return {
            "source": "dali_reader",
            "epoch": self._epoch,
            "position": position,
            "seed": self.seed,
            "world_size": self.plan.world_size,
            "micro_batch": self.plan.micro_batch,
            "samples": self.plan.samples,
            "checkpoint": _checkpoint_tensor(checkpoint),
            "origin": origin,
            "reader_epoch": reader_epoch,
            "reader_runs": runs,
        }

    def load_state_dict(self, state: dict) -> None:
        plan = self.plan
        epoch, position = int(state["epoch"]), int(state["position"])
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"data position was saved with seed {state['seed']}, this run uses {self.seed}")
        now = (plan.world_size, plan.micro_batch, plan.samples)
        saved = (
            tuple(int(state[k]) for k in ("world_size", "micro_batch", "samples"))
            if "samples" in state
            else now
        )
        if saved != now and 0 < position < self.batches_per_epoch:
            raise ValueError(
                f"cannot resume mid-epoch {epoch} (batch {position}) with a different world size, micro batch "
                f"or dataset (saved {saved}, now {now}): the epoch's sample assignment would change; "
                "resume with the original layout or from an epoch boundary"
            )
        checkpoint = _checkpoint_bytes(state.get("checkpoint")) if saved == now else b""
        if saved != now:  # an epoch boundary: done stays done, not started stays not started
            position = self.batches_per_epoch if position else 0
        if not checkpoint:
            log.info(
                "data: no DALI reader checkpoint in the saved position: fresh reader state for epoch %d, "
                "skipping %d batches",
                epoch,
                position,
            )
        self._pipe = None
        self._epoch = epoch
        self._pending = {
            "checkpoint": checkpoint,
            "epoch": epoch,
            "position": min(position, self.batches_per_epoch),
            "origin": int(state.get("origin", epoch)),
            "reader_epoch": int(state.get("reader_epoch", epoch)),
            "reader_runs": int(state.get("reader_runs", position)),
        }


def _checkpoint_tensor(checkpoint: bytes) -> torch.Tensor:
    """A serialized DALI checkpoint as a uint8 tensor: unlike an empty `bytes`, which pickles as a call to
    `bytes`, a tensor passes every `torch.load(weights_only=True)`."""
    if not checkpoint:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(checkpoint), dtype=torch.uint8)


def _checkpoint_bytes(saved: torch.Tensor | bytes | None) -> bytes:
    """The serialized DALI checkpoint from a state dict (see `_checkpoint_tensor`)."""
    if saved is None:
        return b""
    if isinstance(saved, torch.Tensor):
        return saved.numpy().tobytes()
    return bytes(saved)


def _numpy(out) -> np.ndarray:
    tensor = out.as_cpu() if hasattr(out, "as_cpu") else out
    return np.array(tensor.as_tensor())


def build_reader_loader(
    data: DataConfig,
    aug: AugmentConfig,
    manifest: Manifest,
    *,
    micro_batch: int,
    rank: int,
    world_size: int,
    device: torch.device,
    seed: int,
    channels_last: bool,
    dtype: torch.dtype,
    staged_paths: list[Path] | None = None,
) -> DaliReaderLoader:
    """The loader for `data.dali_source=reader` (aug already resolved); `staged_paths`: node-local copies of
    every train shard (with the reader every rank reads every shard over the epochs)."""
    from dist_vgg.data.dali_pipeline import dali_device

    decoder, device_id = dali_device(data.decode_device, device)
    plan = ReaderPlan(manifest.splits["train"].samples, micro_batch, world_size)
    paths = reader_shards(data, manifest, staged_paths)
    loader = DaliReaderLoader(
        paths,
        aug,
        plan,
        rank=rank,
        seed=seed,
        shuffle_buffer=data.shuffle_buffer,
        threads=data.workers,
        decoder=decoder,
        device_id=device_id,
        device=device,
        dtype=dtype,
        channels_last=channels_last,
    )
    return loader
