"""The launch environment, in one place: torchrun's, SLURM's (`srun`, one task per GPU) or MPI's variables →
rank, local rank, world size, master address and port. Nothing else in dist-vgg reads those variables.

`detect()` has no side effects; `init_process_group()` is the one function that starts torch.distributed.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PORT = 29500
PORT_SPAN = 20000
"""Under SLURM without MASTER_PORT the port is derived from the job id: 20000 + job_id % PORT_SPAN, so two
jobs on the same nodes do not collide."""


class LaunchError(RuntimeError):
    """The environment describes an impossible or incomplete launch; the message names the variable."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job. `launcher` is one of torchrun, slurm, mpi, single."""

    launcher: str
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    node_rank: int = 0
    num_nodes: int = 1
    node_name: str = field(default_factory=socket.gethostname)
    job_id: str | None = None
    """SLURM job id (None outside SLURM): labels metrics and names service-discovery files."""
    restart_count: int = 0
    """SLURM_RESTART_COUNT: how many times SLURM requeued this job."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        return (
            f"launcher={self.launcher} rank={self.rank}/{self.world_size} local_rank={self.local_rank} "
            f"node={self.node_name} ({self.node_rank}/{self.num_nodes}) master={self.master_addr}:{self.master_port}"
            + (f" job={self.job_id} restarts={self.restart_count}" if self.job_id else "")
        )


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise LaunchError(f"{name} is not set, but the launch looks like it needs it")
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"{name}={raw!r} is not an integer") from None


def first_slurm_host(nodelist: str) -> str:
    """First host name of a SLURM node list such as `node[01-04,07],gpu3` → `node01`."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise LaunchError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def detect(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read the launcher's variables. Precedence: torchrun (it sets RANK/LOCAL_RANK/WORLD_SIZE) → SLURM job
    step (`srun`: SLURM_PROCID/SLURM_NTASKS) → MPI (Open MPI's OMPI_COMM_WORLD_*, MPICH/Hydra's PMI_*) →
    a single process."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID")
    restarts = _int(env, "SLURM_RESTART_COUNT", 0)
    node = env.get("SLURMD_NODENAME") or socket.gethostname()
    common = {"job_id": job_id, "restart_count": restarts, "node_name": node}
    port_default = DEFAULT_PORT if job_id is None else 20000 + int(job_id) % PORT_SPAN

    if "RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env:
        local_ws = _int(env, "LOCAL_WORLD_SIZE", 1)
        return LaunchEnv(
            "torchrun",
            rank=_int(env, "RANK"),
            local_rank=_int(env, "LOCAL_RANK"),
            world_size=_int(env, "WORLD_SIZE"),
            local_world_size=local_ws,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
            node_rank=_int(env, "GROUP_RANK", _int(env, "RANK") // max(1, local_ws)),
            num_nodes=max(1, _int(env, "WORLD_SIZE") // max(1, local_ws)),
            **common,
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env:
        addr = env.get("MASTER_ADDR") or first_slurm_host(
            env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "127.0.0.1")
        )
        return LaunchEnv(
            "slurm",
            rank=_int(env, "SLURM_PROCID"),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            world_size=_int(env, "SLURM_NTASKS"),
            local_world_size=_local_tasks(
                env.get("SLURM_TASKS_PER_NODE") or env.get("SLURM_STEP_TASKS_PER_NODE")
            ),
            master_addr=addr,
            master_port=_int(env, "MASTER_PORT", port_default),
            node_rank=_int(env, "SLURM_NODEID", 0),
            num_nodes=_int(env, "SLURM_STEP_NUM_NODES", _int(env, "SLURM_NNODES", 1)),
            **common,
        )
    for prefix in ("OMPI_COMM_WORLD_", "PMI_", "PMIX_"):
        rank_var = f"{prefix}RANK"
        size_var = f"{prefix}SIZE"
        if rank_var in env and size_var in env:
            local = env.get(f"{prefix}LOCAL_RANK") or env.get("MPI_LOCALRANKID") or "0"
            local_size = env.get(f"{prefix}LOCAL_SIZE") or env.get("MPI_LOCALNRANKS") or "1"
            ws = _int(env, size_var)
            return LaunchEnv(
                "mpi",
                rank=_int(env, rank_var),
                local_rank=int(local),
                world_size=ws,
                local_world_size=int(local_size),
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=_int(env, "MASTER_PORT", port_default),
                node_rank=_int(env, rank_var) // max(1, int(local_size)),
                num_nodes=max(1, ws // max(1, int(local_size))),
                **common,
            )
    return LaunchEnv(
        "single",
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", port_default),
        **common,
    )


def _local_tasks(tasks_per_node: str | None) -> int:
    """SLURM_TASKS_PER_NODE looks like `8(x2)` or `2,1`: the first node's count is what we need."""
    if not tasks_per_node:
        return 1
    m = re.match(r"(\d+)", tasks_per_node)
    return int(m.group(1)) if m else 1


def backend_for(device_type: str) -> str:
    """NCCL on GPUs, gloo on CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def init_process_group(launch: LaunchEnv, device_type: str, timeout_s: float = 600.0) -> None:
    """Start torch.distributed for `launch` (a no-op for one process). `timeout_s` bounds every collective,
    so a dead rank makes the others fail instead of hanging forever."""
    if not launch.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    kwargs: dict = {}
    if device_type == "cuda":
        import torch

        kwargs["device_id"] = torch.device("cuda", launch.local_rank)
    dist.init_process_group(
        backend=backend_for(device_type),
        init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )


def destroy_process_group(*, together: bool = True) -> None:
    """Tear down torch.distributed (a no-op when it is not running).

    `together` (the clean-exit case) makes every rank meet in a barrier first, so no rank shuts its gloo/NCCL
    connections down while a peer is still using them: a rank that leaves early can otherwise abort in C++
    ("terminate called without an active exception", exit -6), which turns a clean exit code into a crash for
    srun and for the requeue logic. Error paths pass `together=False`: a dead peer would never reach the
    barrier, and waiting for it would only delay the exit by the process-group timeout.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if together:
        dist.barrier()
    # DDP's reducer holds the process group; collect unreachable modules now so that the group is released
    # here, in order, and not during interpreter shutdown.
    gc.collect()
    dist.destroy_process_group()
