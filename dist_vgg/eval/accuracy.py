"""Exact top-k accounting: integer counts per rank, summed with one all-reduce, so the reported error is over
exactly the images evaluated (never a mean of per-rank means, never padded samples)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dist_vgg.data.loader import EvalBatch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the top-k scores, for each k (a tensor, no host sync)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


@dataclass(frozen=True)
class Accuracy:
    images: int
    top1_correct: int
    top5_correct: int

    @property
    def top1(self) -> float:
        return self.top1_correct / self.images if self.images else float("nan")

    @property
    def top5(self) -> float:
        return self.top5_correct / self.images if self.images else float("nan")

    @property
    def top1_err(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_err(self) -> float:
        return 1.0 - self.top5


def reduce_counts(counts: torch.Tensor) -> torch.Tensor:
    """Sum integer counts over all ranks (identity for one process)."""
    if dist.is_available() and dist.is_initialized():
        counts = counts.clone()
        dist.all_reduce(counts)
    return counts


@torch.no_grad()
def evaluate_batches(
    scorer: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[EvalBatch], device: torch.device
) -> Accuracy:
    """Top-1/top-5 of `scorer` (images → class scores N×classes) over this rank's `batches`, summed over
    ranks. Every rank must call it (it ends with an all-reduce)."""
    counts = torch.zeros(3, dtype=torch.int64, device=device)
    for b in batches:
        scores = scorer(b.images)
        labels = b.labels.to(scores.device)
        counts[0] += labels.numel()
        counts[1:] += topk_correct(scores, labels).to(counts.device)
    total = reduce_counts(counts).tolist()  # host sync: once, at the end
    return Accuracy(int(total[0]), int(total[1]), int(total[2]))
