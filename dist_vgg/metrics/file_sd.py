"""Prometheus file-based service discovery for training jobs.

Each job publishes one JSON file in a shared folder listing every rank's exporter (`host:port`, with the run's
labels); Prometheus's `file_sd_configs` watches the folder, so targets appear when a job starts and disappear
when its file is removed at the end. A job killed before it could clean up leaves its file behind: the next
job's rank 0 removes files of jobs SLURM no longer runs (only when SLURM's commands are present, and never for
a job SLURM reports as pending or running).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "dist-vgg-"
"""Target files are named `dist-vgg-<job>.json`; nothing else in the folder is touched."""

FINISHED_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
)
"""SLURM job states after which a job's processes are gone for good (a requeue passes through PENDING)."""


@dataclass(frozen=True)
class Target:
    """One rank's exporter as Prometheus should scrape it."""

    host: str
    port: int
    labels: dict[str, str]

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _safe(job: str) -> str:
    """A job label as a file-name part (SLURM ids are digits; local names may hold anything)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", job)
    if not cleaned:
        raise ValueError(f"job label {job!r} cannot name a service-discovery file")
    return cleaned


def target_file(sd_dir: Path, job: str) -> Path:
    return Path(sd_dir) / f"{PREFIX}{_safe(job)}.json"


def render(targets: list[Target]) -> list[dict]:
    """The file_sd document: one target group per rank, so every `up` series carries that rank's labels."""
    return [{"targets": [t.address], "labels": dict(t.labels)} for t in targets]


def write_targets(sd_dir: Path, job: str, targets: list[Target]) -> Path:
    """Write the job's file atomically (temp file + rename in the same folder: Prometheus never reads half)."""
    sd_dir = Path(sd_dir)
    try:
        sd_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create metrics.sd_dir {str(sd_dir)!r}: {e.strerror}; set metrics.sd_dir to a "
                      "writable shared folder (or empty to publish no targets)") from None  # fmt: skip
    path = target_file(sd_dir, job)
    # The temp name does not end in .json, so a `*.json` file_sd glob never picks it up.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=sd_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(render(targets), f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_targets(path: Path) -> None:
    """Remove a job's file at its end (idempotent)."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove service-discovery file %s: %s", path, e.strerror)


def slurm_job_state(job_id: str, timeout_s: float = 10.0) -> str | None:
    """SLURM's view of a job: its state (e.g. RUNNING, COMPLETED), "UNKNOWN" when SLURM has no record of it,
    or None when SLURM cannot be asked (no `scontrol`, controller unreachable, unexpected answer) — callers
    must then keep whatever they were about to delete."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return None
    try:
        out = subprocess.run(
            [scontrol, "-o", "show", "job", job_id], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0:
        m = re.search(r"\bJobState=(\S+)", out.stdout)
        return m.group(1) if m else None
    if "invalid job id" in (out.stderr + out.stdout).lower():
        return "UNKNOWN"
    return None


def remove_stale(sd_dir: Path, own_job: str) -> list[Path]:
    """Remove target files of SLURM jobs that are finished or unknown to SLURM; returns what was removed.
    Files whose job name is not a SLURM job id (local runs) are left alone: nothing can say they are stale."""
    sd_dir = Path(sd_dir)
    if not sd_dir.is_dir():
        return []
    removed = []
    for path in sorted(sd_dir.glob(f"{PREFIX}*.json")):
        job = path.stem[len(PREFIX) :]
        if job == _safe(own_job) or not re.fullmatch(r"\d+(_\d+)?", job):
            continue
        state = slurm_job_state(job)
        if state == "UNKNOWN" or (state is not None and state.split("+")[0] in FINISHED_STATES):
            remove_targets(path)
            removed.append(path)
    return removed


def gather_targets(own: Target) -> list[Target]:
    """Every rank's target, on every rank (torch.distributed when initialised, else just this one).
    A collective: all ranks of the job must call it together."""
    dist = sys.modules.get("torch.distributed")  # not loaded: no process group (and no import cost)
    if dist is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [own]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (own.host, own.port, own.labels))
    return [Target(h, p, lab) for h, p, lab in gathered]
