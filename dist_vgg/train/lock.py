"""RUN/LOCK: one job writes a run folder at a time.

Rank 0 creates the file with O_EXCL and writes who holds it (host, pid, process start time, SLURM job id).
An existing lock is taken over only when it is provably stale: same host and the process is gone (or the
pid now belongs to another process), or the same SLURM job (a requeue that lands on another node).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

LOCK = "LOCK"


class LockError(RuntimeError):
    """Another live job holds the run folder."""


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    current = _start_time(pid)
    if current is None:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return start is None or current == start


class RunLock:
    def __init__(self, run_dir: Path, job_id: str | None) -> None:
        self.path = Path(run_dir) / LOCK
        self.job_id = job_id
        self.held = False
        self.took_over: dict | None = None

    def acquire(self) -> None:
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "job_id": self.job_id,
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if not self._stale(holder):
                    raise LockError(
                        f"{self.path.parent} is in use by another job ({_describe(holder)}); wait for it to end, "
                        f"use another --run-dir, or delete {self.path} if you are sure that job is gone"
                    ) from None
                self.took_over = holder
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise LockError(f"could not take {self.path}: another process raced for it")

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True  # torn or empty: its writer died between create and write
        if self.job_id is not None and holder.get("job_id") == self.job_id:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"], holder.get("start"))
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _describe(holder: dict) -> str:
    job = f", SLURM job {holder['job_id']}" if holder.get("job_id") else ""
    return f"host {holder.get('host')}, pid {holder.get('pid')}{job}"
