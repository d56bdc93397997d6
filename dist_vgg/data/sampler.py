"""Which samples each rank reads in each epoch — one definition shared by the DALI and the CPU path.

An epoch is `batches_per_epoch = floor(samples / (micro_batch · world_size))` batches on every rank, whatever
the shard sizes: the epoch's permutation is cut to exactly that many samples per rank (the remainder, fewer
than one global batch, is skipped this epoch; a different remainder each epoch). The permutation depends
only on (seed, epoch), so each epoch's order differs, a rank reads a different subset every epoch, and a
position (epoch, batches consumed) is all a resume needs.

Ranks are grouped: by default one group of all ranks permutes the whole split. With node-local staging the
group is a node's ranks and each node owns a fixed contiguous 1/nodes of the split (so it copies only those
shards); the node's ranks still draw a new permutation of it every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERMUTATION_STREAM = 1
"""Seed-sequence tags that keep the sampler's and the augmentation's random streams independent."""
AUGMENT_STREAM = 2


@dataclass(frozen=True)
class EpochPlan:
    samples: int
    """Samples in the split."""
    micro_batch: int
    world_size: int
    group_size: int
    """Ranks that share one sample range: world_size (global shuffle) or the ranks of one node (staging)."""

    def __post_init__(self) -> None:
        if self.world_size % self.group_size:
            raise ValueError(
                f"world size {self.world_size} is not a multiple of the ranks per node {self.group_size}"
            )
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the training split has {self.samples} samples, fewer than one global batch "
                f"(micro_batch {self.micro_batch} × world size {self.world_size}); lower the batch or add data"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.samples // (self.micro_batch * self.world_size)

    @property
    def groups(self) -> int:
        return self.world_size // self.group_size

    def group_range(self, group: int) -> tuple[int, int]:
        """The global sample range [lo, hi) that a group's ranks read from (fixed across epochs)."""
        return group * self.samples // self.groups, (group + 1) * self.samples // self.groups

    def rank_range(self, rank: int) -> tuple[int, int]:
        return self.group_range(rank // self.group_size)

    def rank_batches(self, seed: int, epoch: int, rank: int) -> np.ndarray:
        """batches_per_epoch × micro_batch global sample positions this rank reads in `epoch`, in order."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside world size {self.world_size}")
        group, local = divmod(rank, self.group_size)
        lo, hi = self.group_range(group)
        rng = np.random.default_rng([seed, epoch, group, PERMUTATION_STREAM])
        perm = lo + rng.permutation(hi - lo)
        per_rank = self.batches_per_epoch * self.micro_batch
        mine = perm[local * per_rank : (local + 1) * per_rank]
        return mine.reshape(self.batches_per_epoch, self.micro_batch)

    def describe(self) -> str:
        used = self.batches_per_epoch * self.micro_batch * self.world_size
        return (
            f"epoch = {self.batches_per_epoch} batches of {self.micro_batch} per rank × {self.world_size} ranks "
            f"= {used} of {self.samples} samples ({self.samples - used} skipped, a different remainder each epoch)"
            + (f"; {self.groups} node groups of {self.group_size} ranks" if self.groups > 1 else "")
        )


def eval_range(samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank's contiguous share [lo, hi) of an evaluation split: every sample exactly once, no padding."""
    return rank * samples // world_size, (rank + 1) * samples // world_size
