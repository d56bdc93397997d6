"""Preemption signals: a handler only sets a flag; the loop agrees on it across ranks every few steps.

SIGUSR1 (SLURM's `--signal=USR1@T`, before the time limit) → save and exit REQUEUE (75).
SIGTERM (scancel, the time limit, SLURM preemption) → save and exit STOPPED (4): a cancelled job stays cancelled.
"""

from __future__ import annotations

import signal
from types import FrameType

NONE, REQUEUE, TERMINATE = 0, 1, 2
"""Flag values; a larger one wins when ranks disagree (SIGTERM beats SIGUSR1)."""


class StopFlag:
    def __init__(self) -> None:
        self.value = NONE
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig, value in ((signal.SIGUSR1, REQUEUE), (signal.SIGTERM, TERMINATE)):
            self._previous[sig] = signal.signal(sig, self._handler(value))

    def _handler(self, value: int):
        def handle(signum: int, frame: FrameType | None) -> None:
            self.value = max(self.value, value)

        return handle

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        self._previous.clear()
