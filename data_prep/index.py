"""`python -m data_prep index OUT`: rewrite every shard's DALI index from the shard itself (when an index was
lost or a shard was copied without it). The text is the same `dist_vgg.data.format.write_shard` writes."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

from dist_vgg.data import format as fmt


def index_text(shard: str | Path) -> str:
    """The DALI index of `shard`, read from its tar headers."""
    lines: list[str] = []
    current, parts = None, []
    with tarfile.open(shard, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = info.name.partition(".")
            if key != current and current is not None:
                lines.append(" ".join(parts))
                parts = []
            current = key
            parts.append(f"{ext} {info.offset_data} {info.size} {info.name}")
    if current is not None:
        lines.append(" ".join(parts))
    return f"{fmt.INDEX_VERSION} {len(lines)}\n" + "".join(line + "\n" for line in lines)


def write_index(shard: str | Path) -> Path:
    shard = Path(shard)
    path = shard.with_name(fmt.index_name(shard))
    fmt.atomic_write(path, index_text(shard).encode())
    return path


def run(out: str) -> int:
    manifest = fmt.load_manifest(out)
    n = 0
    for split in manifest.splits:
        for shard in manifest.shard_paths(out, split):
            if not shard.is_file():
                print(
                    f"data_prep index: {shard} is missing; run `python -m data_prep verify {out}`",
                    file=sys.stderr,
                )
                return 1
            write_index(shard)
            n += 1
    print(f"data_prep index: wrote {n} DALI indexes under {out}", file=sys.stderr)
    return 0
