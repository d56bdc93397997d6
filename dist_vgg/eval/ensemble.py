"""Combining posteriors, per image, before anything is counted: over test scales (multi-scale), over the dense
and multi-crop protocols (fusion) and over networks (ensembles). Every combination is a plain average of
soft-max posteriors, as in the paper; the average is computed per image by its global index, so it does not
matter which rank evaluated which image at which scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dist_vgg.eval.accuracy import Accuracy, topk_correct


class CoverageError(RuntimeError):
    """The evaluated images are not exactly the validation split, each once; the message says how."""


@dataclass
class Chunk:
    """Posteriors of some images under one (network, protocol, test scale)."""

    member: int
    mode: str
    q: int
    indices: torch.Tensor
    """Global sample indices (position in the validation split), int64."""
    labels: torch.Tensor
    posteriors: torch.Tensor
    """len(indices) × classes, float32 on the CPU."""


@dataclass(frozen=True)
class Combined:
    """One line of results: which networks, protocols and scales were averaged, and the exact accuracy."""

    members: tuple[int, ...]
    modes: tuple[str, ...]
    scales: tuple[int, ...]
    accuracy: Accuracy


def accuracy_of(posteriors: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    correct = topk_correct(posteriors, labels).tolist()
    return Accuracy(int(labels.numel()), int(correct[0]), int(correct[1]))


def average(posteriors: list[torch.Tensor]) -> torch.Tensor:
    """The mean of several N × classes posteriors of the same images."""
    return torch.stack(posteriors).mean(dim=0)


def assemble(chunks: list[Chunk], expected: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors and labels of images 0 … expected−1 in index order, from `chunks` that must hold every one of
    them exactly once; otherwise a `CoverageError` naming `what` (the pass) and the discrepancy."""
    if not chunks:
        raise CoverageError(f"{what}: no image was evaluated, but the validation split has {expected}")
    idx = torch.cat([c.indices for c in chunks])
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= expected):
        raise CoverageError(
            f"{what}: sample index {int(idx.max())} is outside the validation split of {expected} images "
            "(does the manifest belong to these shards?)"
        )
    seen = torch.bincount(idx, minlength=expected)
    if idx.numel() != expected or bool((seen != 1).any()):
        missing = int((seen == 0).sum())
        repeated = int((seen > 1).sum())
        raise CoverageError(
            f"{what}: evaluated {idx.numel()} images but the manifest's validation split has {expected} "
            f"({missing} never evaluated, {repeated} evaluated more than once); re-run data_prep verify on the shards"
        )
    classes = chunks[0].posteriors.shape[1]
    post = torch.empty(expected, classes, dtype=torch.float32)
    labels = torch.empty(expected, dtype=torch.int64)
    post[idx] = torch.cat([c.posteriors for c in chunks])
    labels[idx] = torch.cat([c.labels for c in chunks])
    return post, labels


class Accumulator:
    """Rank 0's running per-image sums, fed one pass (network, Q) at a time, so it holds one N × classes sum per
    network and protocol rather than every pass: at paper scale (D+E, dense+multi-crop, 3 scales, 50,000 images)
    4 sums of 200 MB instead of 12."""

    def __init__(self, members: int, modes: tuple[str, ...], scales: tuple[int, ...], expected: int) -> None:
        self.members, self.modes, self.scales, self.expected = members, modes, scales, expected
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self.passes: dict[tuple[int, str], int] = {}
        self.per_scale: dict[tuple[int, str, int], Accuracy] = {}
        self.labels: torch.Tensor | None = None

    def add_pass(self, member: int, q: int, chunks: list[Chunk]) -> None:
        """Every rank's chunks of one (network, Q) pass; checks coverage for each protocol."""
        for mode in self.modes:
            part = [c for c in chunks if c.mode == mode]
            post, labels = assemble(part, self.expected, f"network {member + 1}, {mode}, Q={q}")
            if self.labels is None:
                self.labels = labels
            elif not torch.equal(self.labels, labels):
                raise CoverageError(f"network {member + 1}, {mode}, Q={q}: labels differ from the first pass")
            self.per_scale[(member, mode, q)] = accuracy_of(post, labels)
            key = (member, mode)
            self.sums[key] = post if key not in self.sums else self.sums[key] + post
            self.passes[key] = self.passes.get(key, 0) + 1

    def results(self) -> list[Combined]:
        """Exact accuracies, in this order: each network × protocol × scale (when several scales), each
        network × protocol over all scales, each network's fusion of protocols (when several), the ensemble of
        all networks (when several). The last line is the requested result."""
        assert self.labels is not None, "no pass was added"
        out: list[Combined] = []
        per_member: list[torch.Tensor] = []
        for m in range(self.members):
            per_mode: list[torch.Tensor] = []
            for mode in self.modes:
                if len(self.scales) > 1:
                    out += [Combined((m,), (mode,), (q,), self.per_scale[(m, mode, q)]) for q in self.scales]
                per_mode.append(self.sums[(m, mode)] / self.passes[(m, mode)])
                out.append(Combined((m,), (mode,), self.scales, accuracy_of(per_mode[-1], self.labels)))
            per_member.append(average(per_mode))
            if len(self.modes) > 1:
                out.append(Combined((m,), self.modes, self.scales, accuracy_of(per_member[-1], self.labels)))
        if self.members > 1:
            out.append(
                Combined(
                    tuple(range(self.members)),
                    self.modes,
                    self.scales,
                    accuracy_of(average(per_member), self.labels),
                )
            )
        return out


def combine(
    chunks: list[Chunk], members: int, modes: tuple[str, ...], scales: tuple[int, ...], expected: int
) -> list[Combined]:
    """All passes at once (see `Accumulator.results` for the order of the lines)."""
    acc = Accumulator(members, modes, scales, expected)
    for m in range(members):
        for q in scales:
            acc.add_pass(m, q, [c for c in chunks if (c.member, c.q) == (m, q)])
    return acc.results()
