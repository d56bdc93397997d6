"""Work sharing: `--workers N` processes on one node, and MPI ranks across nodes (`mpiexec -n K` or
`srun --mpi=pmi2`). Every rank computes the same plan; `Team.map_all` spreads tasks over all ranks × workers
and gives every rank every result (in task order), `Team.map_owned` runs only the tasks a rank owns.
Which tasks a process runs never changes what it writes, so the output is byte-identical for any N and K.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from data_prep.errors import PrepError
from dist_vgg import launch


@dataclass
class Team:
    """This process's place among the ranks, and its local worker pool."""

    rank: int
    size: int
    local_rank: int
    workers: int
    comm: Any = None
    """mpi4py's COMM_WORLD when running under MPI with more than one rank."""

    def __post_init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def pool(self) -> ProcessPoolExecutor | None:
        if self.workers > 1 and self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("fork"), initializer=die_with_parent
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def run_local(self, fn: Callable, tasks: Sequence) -> Iterator[tuple[int, Any]]:
        """(position in `tasks`, result) as each finishes, on this rank's workers."""
        pool = self.pool()
        if pool is None:
            for i, t in enumerate(tasks):
                yield i, fn(t)
            return
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            yield futures[fut], fut.result()

    def owned(self, n: int) -> list[int]:
        """Task indices this rank runs: round robin, so big and small tasks spread evenly."""
        return list(range(self.rank, n, self.size))

    def map_all(self, fn: Callable, tasks: Sequence, on_done: Callable[[Any], None] | None = None) -> list:
        """Run `tasks` across ranks; every rank gets all results, in task order."""
        mine = self.owned(len(tasks))
        local: dict[int, Any] = {}
        for j, result in self.run_local(fn, [tasks[i] for i in mine]):
            local[mine[j]] = result
            if on_done:
                on_done(result)
        if self.comm is None:
            return [local[i] for i in range(len(tasks))]
        merged: dict[int, Any] = {}
        for part in self.comm.allgather(local):
            merged.update(part)
        return [merged[i] for i in range(len(tasks))]

    def gather(self, value: Any) -> list | None:
        """Every rank's `value` on rank 0 (None elsewhere)."""
        return [value] if self.comm is None else self.comm.gather(value, root=0)

    def bcast(self, value: Any) -> Any:
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def abort(self, code: int) -> None:
        """Stop every rank (one failing rank must not leave the others waiting forever)."""
        if self.comm is not None:
            sys.stderr.flush()
            self.comm.Abort(code)


def die_with_parent() -> None:
    """Worker initializer: a worker whose parent was killed (a crashed or cancelled job) exits too, instead of
    waiting for tasks forever and holding the job's output pipes open (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        pass  # not Linux: the pool's own shutdown is all we have


def make_team(workers: int) -> Team:
    """Ranks from the launcher (see dist_vgg.launch), talking through mpi4py when there are several."""
    if workers < 1:
        raise PrepError(f"--workers {workers}: need at least 1")
    env = launch.detect()
    if env.world_size <= 1:
        return Team(0, 1, 0, workers)
    try:
        from mpi4py import MPI
    except ImportError:
        raise PrepError(
            f"launched as {env.world_size} tasks ({env.launcher}) but mpi4py is missing: `pip install mpi4py`"
        ) from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != env.world_size or comm.Get_rank() != env.rank:
        raise PrepError(
            f"the launcher says rank {env.rank} of {env.world_size} but MPI says {comm.Get_rank()} of "
            f"{comm.Get_size()}: start data_prep with `mpiexec -n K` or `srun --mpi=pmi2` (MPICH) so that "
            "all ranks share one MPI world"
        )
    return Team(env.rank, env.world_size, env.local_rank, workers, comm)
