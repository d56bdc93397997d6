"""One evaluation: for every network and test scale Q, one pass over this rank's share of the validation
split; every requested protocol runs on the same batch of whole rescaled images, and its posteriors are kept
with their global sample indices. After each pass rank 0 gathers them, checks that every validation image was
evaluated exactly once, and folds them into per-image sums; at the end it averages posteriors per image
(scales → protocols → networks) before counting."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dist_vgg.data.loader import EvalBatch
from dist_vgg.eval.ensemble import Accumulator, Chunk, Combined, CoverageError
from dist_vgg.eval.protocols import PROTOCOLS, check_scales
from dist_vgg.models.vgg import VGG

BatchSource = Callable[[int, int, int | None], Iterable[EvalBatch]]
"""(network number, Q, crop or None) → this rank's batches: images rescaled to shorter side Q, preprocessed as
that network expects; crop=None gives whole images (equal sizes within a batch), else centre crops."""


@dataclass(frozen=True)
class EvalPlan:
    """What to compute; the CLI builds it from its flags."""

    modes: tuple[str, ...]
    """Component protocols (centre, dense, multicrop); several are fused by averaging."""
    scales: tuple[int, ...]
    """Test scales Q; several are averaged."""
    flip: bool = True
    """Average each protocol's posteriors with those of the mirrored input."""


@torch.no_grad()
def local_pass(
    model: VGG, member: int, q: int, plan: EvalPlan, batches: Iterable[EvalBatch], device: torch.device
) -> tuple[list[Chunk], int]:
    """This rank's posteriors of one network at one scale, for each protocol of `plan`; and the image count."""
    found: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {m: [] for m in plan.modes}
    images = 0
    for b in batches:
        x = b.images.to(device, non_blocking=True)
        for mode in plan.modes:
            p = PROTOCOLS[mode](model, x, plan.flip)
            found[mode].append((b.indices, b.labels, p))
        images += b.labels.numel()
    chunks = []
    for mode, parts in found.items():
        if not parts:
            continue
        chunks.append(
            Chunk(
                member,
                mode,
                q,
                torch.cat([i.cpu().long() for i, _, _ in parts]),
                torch.cat([lab.cpu().long() for _, lab, _ in parts]),
                torch.cat([p.float().cpu() for _, _, p in parts]),  # host sync: once per pass
            )
        )
    return chunks, images


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cpu_group() -> dist.ProcessGroup | None:
    """A gloo group for gathering CPU objects (None: the default group, already gloo, or one process).
    Every rank must call it."""
    if _distributed() and dist.get_backend() != "gloo":
        return dist.new_group(backend="gloo")
    return None


def gather_to_rank0(chunks: list[Chunk], group: dist.ProcessGroup | None) -> list[Chunk] | None:
    """All ranks' chunks on rank 0 (None elsewhere)."""
    if not _distributed():
        return chunks
    rank = dist.get_rank()
    received: list[list[Chunk]] | None = [[] for _ in range(dist.get_world_size())] if rank == 0 else None
    dist.gather_object(chunks, received, dst=0, group=group)
    if rank != 0:
        return None
    assert received is not None
    return [c for part in received for c in part]


def share_from_rank0(message: str | None, group: dist.ProcessGroup | None) -> str | None:
    """Rank 0's verdict on every rank, so a coverage error stops all ranks instead of leaving them waiting."""
    if not _distributed():
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def evaluate(
    models: list[VGG],
    plan: EvalPlan,
    source: BatchSource,
    expected_images: int,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[Combined] | None:
    """Run `plan` for every network (several = an ensemble). Every rank must call it; rank 0 gets the combined
    results (see `Accumulator.results`), the others None."""
    for n, model in enumerate(models):
        check_scales(list(plan.scales), model.spec.crop, f"network {n + 1} ({model.spec.config})")
    whole_image = plan.modes != ("centre",)
    acc = Accumulator(len(models), plan.modes, plan.scales, expected_images)
    group = cpu_group()
    for n, model in enumerate(models):
        model.to(device).eval()
        for q in plan.scales:
            start = time.perf_counter()
            crop = None if whole_image else model.spec.crop
            chunks, images = local_pass(model, n, q, plan, source(n, q, crop), device)
            secs = time.perf_counter() - start
            log(
                f"network {n + 1} ({model.spec.config}) Q={q} {'+'.join(plan.modes)}: {images} images on this "
                f"rank in {secs:.1f} s ({images / max(secs, 1e-9):.1f} img/s)"
            )
            everything = gather_to_rank0(chunks, group)  # one pass at a time bounds rank 0's memory
            error = None
            if everything is not None:
                try:
                    acc.add_pass(n, q, everything)
                except CoverageError as e:
                    error = str(e)
            error = share_from_rank0(error, group)
            if error is not None:
                raise CoverageError(error)
    return acc.results() if not _distributed() or dist.get_rank() == 0 else None
