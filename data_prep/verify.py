"""`python -m data_prep verify OUT [--decode] [--workers N]`: trust nothing on disk. Every shard is re-hashed
against the manifest, its samples and labels are counted, its DALI index compared with its tar headers, and
with --decode every image decoded. Missing and extra shards are reported too. Exit status 1 and one line per
bad shard, naming it and what is wrong."""

from __future__ import annotations

import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import simplejpeg

from data_prep.index import index_text
from dist_vgg.data import format as fmt


@dataclass
class ShardReport:
    path: str
    problems: list[str] = field(default_factory=list)
    per_class: dict[int, int] = field(default_factory=dict)


def check_shard(job: tuple[str, fmt.ShardEntry, bool]) -> ShardReport:
    path_s, entry, decode = job
    path = Path(path_s)
    rep = ShardReport(path_s)
    size = path.stat().st_size
    if size < entry.bytes:
        rep.problems.append(f"truncated: {size:,} bytes, the manifest says {entry.bytes:,}")
        return rep
    if size > entry.bytes:
        rep.problems.append(f"size {size:,} bytes, the manifest says {entry.bytes:,} (modified or appended)")
        return rep
    if fmt.sha256_file(path) != entry.sha256:
        rep.problems.append("sha256 differs from the manifest (bit flip or modified content)")
    try:
        n = 0
        for key, members in fmt.iter_shard(path):
            n += 1
            if sorted(members) != sorted(fmt.MEMBER_EXTS):
                rep.problems.append(
                    f"sample {key} has members {sorted(members)}, expected {list(fmt.MEMBER_EXTS)}"
                )
                continue
            label = fmt.decode_label(members[fmt.CLS])
            rep.per_class[label] = rep.per_class.get(label, 0) + 1
            if decode:
                try:
                    simplejpeg.decode_jpeg(members[fmt.JPG], colorspace="rgb", strict=True)
                except ValueError as e:
                    rep.problems.append(f"sample {key}: JPEG does not decode ({e})")
        if n != entry.samples:
            rep.problems.append(f"{n} samples, the manifest says {entry.samples}")
    except (tarfile.TarError, ValueError, OSError) as e:
        rep.problems.append(f"unreadable tar ({type(e).__name__}: {e})")
        return rep
    idx = path.with_name(fmt.index_name(path))
    if not idx.is_file():
        rep.problems.append(f"DALI index {idx.name} is missing (recreate: python -m data_prep index OUT)")
    elif idx.read_text() != index_text(path):
        rep.problems.append(
            f"DALI index {idx.name} does not match the shard (recreate: python -m data_prep index OUT)"
        )
    return rep


def run(out: str, decode: bool = False, workers: int = 1) -> int:
    manifest = fmt.load_manifest(out)
    bad: list[str] = []
    jobs = []
    for split, entry in manifest.splits.items():
        expected = {e.name: e for e in entry.shards}
        folder = Path(out) / split
        on_disk = {p.name for p in folder.glob("*.tar")} if folder.is_dir() else set()
        for name in sorted(set(expected) - on_disk):
            bad.append(f"{folder / name}: missing (listed in the manifest)")
        for name in sorted(on_disk - set(expected)):
            bad.append(f"{folder / name}: extra shard, not in the manifest")
        jobs += [(str(folder / name), expected[name], decode) for name in sorted(set(expected) & on_disk)]
    for split in fmt.SPLITS:
        if (
            split not in manifest.splits
            and (Path(out) / split).is_dir()
            and any((Path(out) / split).glob("*.tar"))
        ):
            bad.append(f"{Path(out) / split}: extra split with shards, not in the manifest")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            reports = list(pool.map(check_shard, jobs))
    else:
        reports = [check_shard(j) for j in jobs]
    bad += [f"{r.path}: {p}" for r in reports for p in r.problems]
    if not bad:
        for split, entry in manifest.splits.items():
            counts = [0] * manifest.num_classes
            for r in reports:
                if Path(r.path).parent.name == split:
                    for label, c in r.per_class.items():
                        if label >= manifest.num_classes:
                            bad.append(f"{r.path}: label {label} ≥ {manifest.num_classes} classes")
                        else:
                            counts[label] += c
            if counts != entry.per_class:
                bad.append(f"{out}/{split}: per-class counts in the shards differ from the manifest")
    if bad:
        for line in bad:
            print(f"verify: BAD {line}", file=sys.stderr)
        print(
            f"verify: {len(bad)} problem(s) in {out}; re-run data_prep imagenet with the same options to redo bad shards",
            file=sys.stderr,
        )
        return 1
    n = sum(len(e.shards) for e in manifest.splits.values())
    samples = sum(e.samples for e in manifest.splits.values())
    print(
        f"verify: OK {out}: {n} shards, {samples:,} samples{', all decoded' if decode else ''}",
        file=sys.stderr,
    )
    return 0
