"""Random access to a prepared split: which shard and byte range hold sample i, and reading its JPEG and label.

Both input paths read samples by global position (position in the split = the order data_prep wrote them),
through the DALI index files beside the shards: one `pread` per sample, no tar scanning, and any subset of
samples in any order. That is what lets both paths share one sampler (`sampler.py`) and so one definition of
an epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dist_vgg.data.config import DataConfig
from dist_vgg.data.format import (
    CLS,
    INDEX_VERSION,
    JPG,
    META,
    Manifest,
    ShardFormatError,
    decode_label,
    index_name,
    load_manifest,
    read_classes,
)


@dataclass
class DatasetInfo:
    """What the trainer and evaluation need to know about a prepared dataset before reading a sample."""

    num_classes: int
    train_samples: int
    """Samples in the training split (0 when the dataset has none)."""
    val_samples: int
    """Samples in the validation split (0 when the dataset has none)."""
    wnids: list[str]
    """WNID per class index (classes.txt)."""
    class_names: list[str]
    """Human-readable name per class index ('' where the source gave none)."""

    @property
    def classes(self) -> list[str]:
        """The class list a weights file records: WNIDs, by class index."""
        return self.wnids


def dataset_info(data: DataConfig) -> DatasetInfo:
    """Counts and class list of the prepared dataset at `data.path` (manifest.json + classes.txt)."""
    if not data.path:
        raise ValueError("data.path is empty (synthetic data): there is no dataset to describe")
    manifest = load_manifest(data.path)
    classes = read_classes(data.path)
    if len(classes) != manifest.num_classes:
        raise ShardFormatError(
            f"{Path(data.path) / 'classes.txt'} lists {len(classes)} classes but the manifest says "
            f"{manifest.num_classes}; re-run data_prep"
        )
    return DatasetInfo(
        num_classes=manifest.num_classes,
        train_samples=manifest.splits["train"].samples if "train" in manifest.splits else 0,
        val_samples=manifest.splits["val"].samples if "val" in manifest.splits else 0,
        wnids=[w for w, _ in classes],
        class_names=[n for _, n in classes],
    )


def split_first(manifest: Manifest, split: str) -> np.ndarray:
    """Global position of each shard's first sample, plus the split size as the last entry."""
    if split not in manifest.splits:
        manifest.shard_paths("", split)  # raises the format's error naming the missing split
    counts = [s.samples for s in manifest.splits[split].shards]
    return np.concatenate([[0], np.cumsum(np.array(counts, dtype=np.int64))])


def shards_covering(first: np.ndarray, lo: int, hi: int) -> list[int]:
    """Shard numbers holding global samples [lo, hi)."""
    if hi <= lo:
        return []
    a = int(np.searchsorted(first, lo, side="right")) - 1
    b = int(np.searchsorted(first, hi - 1, side="right")) - 1
    return list(range(a, b + 1))


def _missing_index(idx: Path, root: Path) -> ShardFormatError:
    return ShardFormatError(
        f"DALI index {idx} is missing; recreate the indexes with `python -m data_prep index {root}`"
    )


@dataclass
class SplitIndex:
    """Byte ranges of every sample of one split (numpy arrays indexed by global sample position).

    Only the shards a rank reads need their index parsed (`shards=`); other samples stay marked -1 and
    reading one is an error, so a wrong assignment cannot silently read the wrong bytes."""

    root: Path
    split: str
    paths: list[Path]
    """Shard file per shard number (possibly redirected to node-local copies by staging)."""
    first: np.ndarray
    """Global position of each shard's first sample (len = shards + 1; the last entry is the split size)."""
    shard: np.ndarray
    jpg: np.ndarray
    """(offset, size) of the JPEG member per sample; -1 where the shard was not loaded."""
    cls: np.ndarray
    meta: np.ndarray
    _fds: dict[int, int] = field(default_factory=dict, repr=False)
    _pid: int = field(default=-1, repr=False)

    @property
    def samples(self) -> int:
        return int(self.first[-1])

    @classmethod
    def open(
        cls,
        root: str | Path,
        split: str,
        manifest: Manifest | None = None,
        shards: list[int] | None = None,
        paths: list[Path] | None = None,
    ) -> SplitIndex:
        root = Path(root)
        manifest = manifest or load_manifest(root)
        listed = manifest.shard_paths(root, split)
        if not listed or manifest.splits[split].samples == 0:
            raise ShardFormatError(f"{root} has no {split} shards in its manifest; re-run data_prep")
        paths = paths or listed
        counts = np.array([s.samples for s in manifest.splits[split].shards], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(counts)])
        n = int(first[-1])
        if n != manifest.splits[split].samples:
            raise ShardFormatError(
                f"{root}/manifest.json: the {split} shards hold {n} samples but the split says "
                f"{manifest.splits[split].samples}; re-run data_prep"
            )
        out = cls(
            root,
            split,
            list(paths),
            first,
            np.repeat(np.arange(len(counts), dtype=np.int32), counts),
            np.full((n, 2), -1, dtype=np.int64),
            np.full((n, 2), -1, dtype=np.int64),
            np.full((n, 2), -1, dtype=np.int64),
        )
        for k in range(len(counts)) if shards is None else sorted(set(shards)):
            out._load_shard(k, int(counts[k]))
        return out

    def _load_shard(self, k: int, count: int) -> None:
        path = self.paths[k]
        if not path.is_file():
            raise ShardFormatError(
                f"shard {path} listed in {self.root}/manifest.json is missing; copy it back or re-run data_prep"
            )
        idx = path.with_name(index_name(path))
        try:
            lines = idx.read_text().splitlines()
        except FileNotFoundError:
            raise _missing_index(idx, self.root) from None
        head = lines[0].split() if lines else []
        if len(head) != 2 or head[0] != INDEX_VERSION or int(head[1]) != count or len(lines) - 1 != count:
            raise ShardFormatError(
                f"{idx} is not a {INDEX_VERSION} DALI index of {count} samples (the manifest's count); "
                f"recreate it with `python -m data_prep index {self.root}`"
            )
        base = int(self.first[k])
        if self._load_regular(lines[1:], base, count):
            return
        for j, line in enumerate(lines[1:]):  # irregular lines: parse one by one, naming what is wrong
            f = line.split()
            members = {f[i]: (int(f[i + 1]), int(f[i + 2])) for i in range(0, len(f) - 3, 4)}
            name = f[3] if len(f) > 3 else "?"
            for ext, table in ((JPG, self.jpg), (CLS, self.cls)):
                if ext not in members:
                    raise ShardFormatError(
                        f"sample {name.partition('.')[0]} (#{j}) of shard {path} has no .{ext} member; "
                        "every sample needs .jpg, .cls and .json: re-run data_prep on this split"
                    )
                table[base + j] = members[ext]
            self.meta[base + j] = members.get(META, (-1, -1))

    def _load_regular(self, lines: list[str], base: int, count: int) -> bool:
        """Vectorised parse of the usual index (every line: jpg, cls, json in the format's order): ImageNet's
        1.28 M lines in about a second instead of ten. False when any line differs."""
        tokens = " ".join(lines).split()
        if len(tokens) != count * 12:
            return False
        if any(tokens[c::12].count(ext) != count for c, ext in ((0, JPG), (4, CLS), (8, META))):
            return False
        rows = slice(base, base + count)
        for c, table in ((1, self.jpg), (5, self.cls), (9, self.meta)):
            table[rows, 0] = np.fromiter(map(int, tokens[c::12]), dtype=np.int64, count=count)
            table[rows, 1] = np.fromiter(map(int, tokens[c + 1 :: 12]), dtype=np.int64, count=count)
        return True

    def _fd(self, k: int) -> int:
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own descriptors
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(k)
        if fd is None:
            fd = self._fds[k] = os.open(self.paths[k], os.O_RDONLY)
        return fd

    def _check(self, i: int) -> int:
        if self.jpg[i, 0] < 0:
            raise IndexError(f"{self.split} sample {i} is outside the shards this rank loaded")
        return int(self.shard[i])

    def read(self, i: int) -> tuple[bytes, int]:
        """(JPEG bytes, class index) of sample i: one read when .cls follows .jpg, as data_prep writes."""
        fd = self._fd(self._check(i))
        (jo, js), (co, cs) = self.jpg[i], self.cls[i]
        if co > jo:
            buf = os.pread(fd, int(co + cs - jo), int(jo))
            return buf[:js], decode_label(buf[co - jo :])
        return os.pread(fd, int(js), int(jo)), decode_label(os.pread(fd, int(cs), int(co)))

    def read_meta(self, i: int) -> bytes:
        fd = self._fd(self._check(i))
        mo, ms = self.meta[i]
        if mo < 0:
            raise ShardFormatError(
                f"{self.split} sample {i} in {self.paths[self.shard[i]]} has no .json member"
            )
        return os.pread(fd, int(ms), int(mo))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"], state["_pid"] = {}, -1
        return state
