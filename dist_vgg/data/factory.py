"""The two entry points the trainer and evaluation call: pick the path (`data.loader`), assign samples to
this rank, stage shards if asked, and return a `TrainLoader` or an iterable of `EvalBatch`es."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from dist_vgg.data.augment import RESIZE_FILTER, resolve_augment
from dist_vgg.data.config import AugmentConfig, DataConfig
from dist_vgg.data.dataset import SplitIndex, shards_covering, split_first
from dist_vgg.data.eval_inputs import eval_batches, plan_eval_batches
from dist_vgg.data.format import load_manifest
from dist_vgg.data.loader import EvalBatch, SyntheticLoader, TrainLoader
from dist_vgg.data.sampler import EpochPlan, eval_range
from dist_vgg.data.staging import stage
from dist_vgg.data.train_loader import BatchReader, IndexedTrainLoader
from dist_vgg.weights import Preprocessing

log = logging.getLogger("dist_vgg.data")


def choose_loader(data: DataConfig) -> str:
    """The path `data.loader` resolves to: synthetic, dali or cpu."""
    from dist_vgg.data.dali_pipeline import dali_available

    if data.loader == "synthetic" or (data.loader == "auto" and not data.path):
        return "synthetic"
    if not data.path:
        raise ValueError(f"data.loader={data.loader} needs data.path (a folder made by data_prep)")
    if data.loader == "dali" and not dali_available():
        raise RuntimeError(
            "data.loader=dali but nvidia.dali does not import; `pip install nvidia-dali-cuda130` "
            "(or the cuda120 build) or set data.loader=cpu"
        )
    if data.loader == "auto":
        return "dali" if dali_available() else "cpu"
    return data.loader


def _node_ranks(local_world_size: int | None, world_size: int) -> int:
    if local_world_size is None:
        from dist_vgg.launch import detect

        local_world_size = detect().local_world_size
    if local_world_size < 1 or world_size % local_world_size:
        raise ValueError(f"local world size {local_world_size} does not divide world size {world_size}")
    return local_world_size


def _open_split(data: DataConfig, split: str, lo: int, hi: int, staged: bool) -> SplitIndex:
    """Index of the shards holding samples [lo, hi), staged to node-local disk first if configured."""
    manifest = load_manifest(data.path)
    shards = shards_covering(split_first(manifest, split), lo, hi)
    paths = stage(data.path, manifest, split, shards, data.stage_local_dir) if staged else None
    return SplitIndex.open(data.path, split, manifest, shards=shards, paths=paths)


def build_train_loader(
    data: DataConfig,
    aug: AugmentConfig,
    *,
    micro_batch: int,
    rank: int,
    world_size: int,
    device: torch.device,
    seed: int,
    num_classes: int | None = None,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    local_world_size: int | None = None,
) -> TrainLoader:
    """Training batches for this rank: `batches_per_epoch` identical on every rank (logged), each epoch a
    new permutation, resumable by `state_dict()`. `local_world_size` (ranks per node, ranks numbered node by
    node) matters only with `data.stage_local_dir`; None asks `dist_vgg.launch.detect()`."""
    path = choose_loader(data)
    if path == "synthetic":
        if num_classes is None:
            raise ValueError("synthetic data needs num_classes")
        log.info("data: synthetic on-device batches (%d per epoch)", data.synthetic_batches)
        return SyntheticLoader(
            num_classes, aug.crop, micro_batch, data.synthetic_batches, device, seed, dtype, channels_last
        )
    if data.decode_device == "gpu" and path == "cpu":
        raise RuntimeError(
            "data.decode_device=gpu needs the DALI loader; set data.loader=dali (or auto) or decode_device=cpu"
        )
    if data.dali_source == "reader" and path == "cpu":
        raise RuntimeError(
            f"data.dali_source=reader is DALI's own webdataset reader, but data.loader={data.loader} resolved to "
            "the CPU path (no DALI); set data.loader=dali with DALI installed, or drop data.dali_source"
        )
    aug = resolve_augment(aug, data)
    manifest = load_manifest(data.path)
    if num_classes is not None and num_classes != manifest.num_classes:
        raise ValueError(
            f"the model has {num_classes} classes but {data.path} has {manifest.num_classes}; "
            "set the model's num_classes from dataset_info(data)"
        )
    staged = bool(data.stage_local_dir)
    if "train" not in manifest.splits:
        manifest.shard_paths(data.path, "train")  # raises the format's error naming the missing split
    if path == "dali" and data.dali_source == "reader":
        # DALI's webdataset reader: every rank reads every shard range over the epochs, so staging copies
        # the whole training split to each node.
        from dist_vgg.data.dali_reader import build_reader_loader

        every_shard = list(range(len(manifest.splits["train"].shards)))
        loader = build_reader_loader(
            data,
            aug,
            manifest,
            micro_batch=micro_batch,
            rank=rank,
            world_size=world_size,
            device=device,
            seed=seed,
            channels_last=channels_last,
            dtype=dtype,
            staged_paths=stage(data.path, manifest, "train", every_shard, data.stage_local_dir)
            if staged
            else None,
        )
        if rank == 0:
            log.info(
                "data: %s loader, shuffle buffer %d, resize %s; %s",
                loader.name,
                data.shuffle_buffer,
                RESIZE_FILTER,
                loader.plan.describe(),
            )
        return loader
    group = _node_ranks(local_world_size, world_size) if staged else world_size
    plan = EpochPlan(manifest.splits["train"].samples, micro_batch, world_size, group)
    lo, hi = plan.rank_range(rank)
    index = _open_split(data, "train", lo, hi, staged)
    reader = BatchReader(index, plan, aug, seed, rank)
    if path == "dali":
        from dist_vgg.data.dali_pipeline import DaliBackend, dali_device

        decoder, device_id = dali_device(data.decode_device, device)
        backend = DaliBackend(reader, data.workers, decoder, device_id)
        name = f"dali (decoder on {'gpu' if decoder == 'mixed' else 'cpu'})"
    else:
        from dist_vgg.data.cpu_pipeline import CpuBackend

        backend = CpuBackend(reader, data.workers, device)
        name = "cpu (simplejpeg + PIL in DataLoader workers)"
    if rank == 0:
        log.info("data: %s loader, resize %s; %s", name, RESIZE_FILTER, plan.describe())
    return IndexedTrainLoader(reader, backend, device, dtype, channels_last, name)


class EvalLoader:
    """Re-iterable evaluation batches of one rank (see `eval_inputs`)."""

    def __init__(self, index: SplitIndex, lo: int, hi: int, **kw) -> None:
        self.index, self.lo, self.hi, self.kw = index, lo, hi, kw
        self.samples = hi - lo
        """Samples this rank evaluates."""

    def __iter__(self) -> Iterator[EvalBatch]:
        return eval_batches(self.index, self.lo, self.hi, **self.kw)

    def __len__(self) -> int:
        kw = self.kw
        return len(plan_eval_batches(self.index, self.lo, self.hi, kw["q"], kw["crop"], kw["batch_size"]))


def build_eval_loader(
    data: DataConfig,
    *,
    q: int,
    crop: int | None,
    batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
    preprocessing: Preprocessing,
    split: str = "val",
) -> EvalLoader:
    """Evaluation inputs of this rank: shorter side rescaled to `q`, then the centre crop×crop (crop=int) or
    the whole image (crop=None, batches of equal-size images). Every sample of `split` exactly once across
    ranks; x = (pixel·scale − mean)/std per `preprocessing`."""
    if not data.path:
        raise ValueError(
            "evaluation needs data.path (a folder made by data_prep); synthetic data has no labels"
        )
    if crop is not None and crop > q:
        raise ValueError(f"eval crop {crop} is larger than the rescaled shorter side Q={q}")
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad eval batch size {batch_size} or rank {rank}/{world_size}")
    manifest = load_manifest(data.path)
    if split not in manifest.splits:
        manifest.shard_paths(data.path, split)
    lo, hi = eval_range(manifest.splits[split].samples, rank, world_size)
    index = _open_split(data, split, lo, hi, bool(data.stage_local_dir))
    return EvalLoader(
        index,
        lo,
        hi,
        q=q,
        crop=crop,
        batch_size=batch_size,
        device=device,
        preprocessing=preprocessing,
        workers=data.workers,
    )
