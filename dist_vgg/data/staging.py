"""Copy the shards this node's ranks read from the shared filesystem to node-local disk at job start.

64 GPUs reading ImageNet at full speed need tens of GB/s from the shared filesystem; a node-local copy of the
node's share (1/nodes of the training split, see `sampler.EpochPlan`) reads at local-disk speed after one
sequential copy. Every local rank calls `stage()` with the same shard list; a file lock makes one of them copy
while the others wait, copies land under temporary names and are renamed, and a shard already staged with
the manifest's size is kept, so a restarted job copies nothing twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from dist_vgg.data.format import Manifest, index_name

log = logging.getLogger("dist_vgg.data")

LOCK = ".staging.lock"


def staging_bytes(manifest: Manifest, split: str, shards: list[int]) -> int:
    """Local disk the listed shards need (their indexes add well under 1%)."""
    entries = manifest.splits[split].shards
    return sum(entries[k].bytes for k in shards)


def stage(
    root: str | Path, manifest: Manifest, split: str, shards: list[int], local_dir: str | Path
) -> list[Path]:
    """Stage `shards` of `split` into `local_dir/split/`; return the path to read for every shard of the split
    (local for the staged ones, shared for the rest)."""
    root, local = Path(root), Path(local_dir) / split
    entries = manifest.splits[split].shards
    paths = [root / split / e.name for e in entries]
    local.mkdir(parents=True, exist_ok=True)
    need = staging_bytes(manifest, split, shards)
    with open(local / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one local rank copies, the others wait and then find it done
        todo = [k for k in shards if not _staged(local / entries[k].name, entries[k].bytes)]
        missing = sum(entries[k].bytes for k in todo)
        free = shutil.disk_usage(local).free
        if missing > free:
            raise OSError(
                f"staging {len(todo)} {split} shards needs {missing / 1e9:.2f} GB in {local}, which has "
                f"{free / 1e9:.2f} GB free; free space, point data.stage_local_dir elsewhere, or unset it"
            )
        log.info(
            "staging %d %s shards (%.2f GB for this node, %.2f GB still to copy) from %s to %s",
            len(shards),
            split,
            need / 1e9,
            missing / 1e9,
            root / split,
            local,
        )
        for k in todo:
            src = paths[k]
            for name in (src.name, index_name(src)):
                tmp = local / f".{name}.tmp-{os.getpid()}"
                shutil.copyfile(src.with_name(name), tmp)
                os.replace(tmp, local / name)
    for k in shards:
        paths[k] = local / entries[k].name
    return paths


def _staged(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size and path.with_name(index_name(path)).is_file()
