"""A real SLURM cluster for the tests: `cluster/local/up.sh` once per session, `down.sh` at the end (also when
a test fails), and a handle whose helpers submit with the real `sbatch` and poll `squeue`/`scontrol` with
deadlines — never fixed sleeps.

Skips (or fails under DIST_VGG_REQUIRE_INTEGRATION=1) when SLURM, munge or root are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import require_integration

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "cluster" / "local" / "up.sh"
DOWN = REPO / "cluster" / "local" / "down.sh"
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


class SlurmTimeout(AssertionError):
    """A poll reached its deadline; the message carries what was last seen."""


@dataclass
class SlurmCluster:
    """Handle on a running local cluster: `env` is what a client command needs (SLURM_CONF)."""

    state: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd),
            env=kw.pop("env", self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            **kw,
        )

    def sbatch(
        self, script: str | Path, *options: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> str:
        """Submit with the real sbatch; returns the job id."""
        full_env = {**self.env, **(env or {})}
        p = self.run("sbatch", "--parsable", *options, str(script), env=full_env, cwd=cwd, check=False)
        if p.returncode != 0:
            raise AssertionError(f"sbatch {script} failed (rc {p.returncode}): {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, Reason, StdOut, ...)."""
        p = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if p.returncode != 0:
            return {}
        fields: dict[str, str] = {}
        for m in re.finditer(r"(\w[\w:/]*)=(\S*)", p.stdout):
            fields.setdefault(m.group(1), m.group(2))
        return fields

    def state_of(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "UNKNOWN")

    def poll(self, what: str, check: Callable[[], object], timeout: float, interval: float = 0.25) -> object:
        """Call `check` until it returns something truthy or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise SlurmTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def wait_state(self, job_id: str, states: set[str] | None = None, timeout: float = 120) -> dict[str, str]:
        """Wait until the job reaches one of `states` (default: any terminal state); returns its record."""
        states = states or TERMINAL
        seen: dict[str, str] = {}

        def done() -> dict[str, str] | None:
            seen.update(self.job(job_id))
            return dict(seen) if seen.get("JobState") in states else None

        try:
            return self.poll(f"job {job_id} to reach {sorted(states)}", done, timeout)  # type: ignore[return-value]
        except SlurmTimeout as e:
            raise SlurmTimeout(
                f"{e}; last seen {seen.get('JobState')} ({seen.get('Reason')})\n{self.tail(job_id)}"
            ) from None

    def wait_in_log(self, log: Path, pattern: str, timeout: float, job_id: str | None = None) -> re.Match:
        """Wait until `log` holds a line matching `pattern` (fails early if the job ended without it)."""
        rx = re.compile(pattern, re.M)

        def found() -> re.Match | None:
            text = log.read_text(errors="replace") if log.exists() else ""
            m = rx.search(text)
            if m is None and job_id is not None and self.state_of(job_id) in TERMINAL:
                text = log.read_text(errors="replace") if log.exists() else ""
                m = rx.search(text)
                if m is None:
                    raise AssertionError(f"job {job_id} ended without {pattern!r} in {log}:\n{text[-3000:]}")
            return m

        try:
            return self.poll(f"{pattern!r} in {log}", found, timeout)  # type: ignore[return-value]
        except SlurmTimeout as e:
            text = log.read_text(errors="replace") if log.exists() else "(no log yet)"
            state = self.job(job_id) if job_id else {}
            raise SlurmTimeout(
                f"{e}; job state {state.get('JobState')} ({state.get('Reason')}):\n{text[-4000:]}"
            ) from None

    def stdout_of(self, job_id: str) -> Path:
        return Path(self.job(job_id)["StdOut"])

    def tail(self, job_id: str, chars: int = 4000) -> str:
        path = self.job(job_id).get("StdOut")
        if path and Path(path).exists():
            return f"--- {path} ---\n" + Path(path).read_text(errors="replace")[-chars:]
        return f"(no output file for job {job_id})"

    def cancel_all(self) -> None:
        self.run("scancel", "--partition=local", check=False)


def slurm_missing() -> str | None:
    """Why a local cluster cannot start here, or None."""
    for tool in ("slurmctld", "slurmd", "sbatch", "munged", "setpriv"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not installed (apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd)"
    return None


def start_cluster(tmp: Path) -> Iterator[SlurmCluster]:
    """Bring the cluster up in `tmp`, yield its handle, and always tear it down."""
    state = tmp / "slurm"
    env = {**os.environ, "DIST_VGG_LOCAL_SLURM_DIR": str(state), "DIST_VGG_LOCAL_NODES": "2"}
    up = subprocess.run(["bash", str(UP)], env=env, capture_output=True, text=True, timeout=120)
    try:
        if up.returncode != 0:
            raise AssertionError(f"cluster/local/up.sh failed (rc {up.returncode}):\n{up.stderr}")
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        client_env.update({"SLURM_CONF": str(state / "slurm.conf"), "DIST_VGG_LOCAL_SLURM": str(state)})
        yield SlurmCluster(state=state, env=client_env)
    finally:
        down = subprocess.run(
            ["bash", str(DOWN), str(state)],
            env={**os.environ, "DIST_VGG_LOCAL_KEEP": "0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, f"cluster/local/down.sh failed:\n{down.stderr}"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = slurm_missing()
    if why:
        require_integration(why)
    yield from start_cluster(tmp_path_factory.mktemp("cluster"))
