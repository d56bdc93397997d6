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

    def ignore_until_exit(self) -> None:
        """After a coordinated stop (exit 75 or 4) further SIGTERM/SIGUSR1 must not change the exit code: srun
        --kill-on-bad-exit SIGTERMs ranks that are milliseconds behind the first one's exit 75, and the default
        action would turn their 75 into 143. A Python handler is not enough: interpreter shutdown resets Python
        handlers to the default before torch's slow teardown, but it leaves SIG_IGN alone."""
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self._previous.clear()

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        self._previous.clear()
