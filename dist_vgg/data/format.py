"""The shard format, in one place: data_prep writes it, the readers read it, nobody else spells a member name.

Layout of a prepared dataset `OUT/`:

    OUT/manifest.json             format version, options, counts, per-shard size and sha256 (see `Manifest`)
    OUT/classes.txt               one WNID per line (class index = line number = position in sorted WNIDs);
                                  a tab and the class name follow where the devkit gives names
    OUT/train/train-000000.tar    WebDataset shards; every shard of a split holds the same number of
    OUT/train/train-000000.idx    samples except the last; a DALI index (plain text) beside each shard
    OUT/val/val-000000.tar ...

Each sample `<key>` is three tar members, in this order:

    <key>.jpg    RGB JPEG bytes
    <key>.cls    class index as fixed-width zero-padded ASCII decimal (`00042`): webdataset parses it as an
                 int, DALI gets a fixed-size byte array
    <key>.json   {"wnid": ..., "width": ..., "height": ..., "source": "<wnid>/<file>"} (+ "reencoded": reason)

Tar members have fixed header fields (mtime 0, uid/gid 0, empty owner names, mode 0644, USTAR), so the same
samples give byte-identical shards whoever writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dist_vgg.data.tar_stream import FileBytes, TarStream

FORMAT_VERSION = 1
SPLITS = ("train", "val")
JPG, CLS, META = "jpg", "cls", "json"
MEMBER_EXTS = (JPG, CLS, META)
LABEL_DIGITS = 5
"""`.cls` width: up to 99,999 classes."""
MANIFEST = "manifest.json"
CLASSES = "classes.txt"
INDEX_VERSION = "v1.2"
"""DALI's webdataset index format version (the one `wds2idx` writes)."""


class ShardFormatError(ValueError):
    """A dataset folder or shard that does not follow this format; the message names the file and the fix."""


def encode_label(label: int) -> bytes:
    if not 0 <= label < 10**LABEL_DIGITS:
        raise ValueError(f"class index {label} does not fit {LABEL_DIGITS} digits")
    return b"%0*d" % (LABEL_DIGITS, label)


def decode_label(raw: bytes | bytearray | memoryview | str) -> int:
    if isinstance(raw, str):
        raw = raw.encode()
    return int(bytes(raw).decode("ascii").strip())


def sample_key(split: str, position: int) -> str:
    """Key of the sample at `position` of the split's global (shuffled) order: `train_00001234`.
    No dots (webdataset splits the key from the extension at the first dot)."""
    return f"{split}_{position:08d}"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def index_name(shard: str | Path) -> str:
    return Path(shard).with_suffix(".idx").name


def shard_path(root: str | Path, split: str, index: int) -> Path:
    return Path(root) / split / shard_name(split, index)


@dataclass(slots=True)
class Sample:
    """One sample to write: `meta` is the `.json` member's content."""

    key: str
    jpeg: bytes | FileBytes
    """The JPEG bytes, or where to read them (data_prep copies images straight from their source file)."""
    label: int
    meta: dict
    """Encoded only once `jpeg` is written, so that reading a `FileBytes` may complete it (data_prep's
    one-pass `--fast` learns an image's size there)."""


_META_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_json_str = json.encoder.encode_basestring_ascii


_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_FAST_META = (
    _c_encoder(None, _META_JSON.default, _json_str, None, ":", ",", True, False, True) if _c_encoder else None
)
"""json's own C encoder for `_META_JSON`'s settings, made once (`JSONEncoder.encode` makes one per call)."""


def encode_meta(meta: dict) -> bytes:
    """`meta` as `json.dumps(meta, sort_keys=True, separators=(",", ":"))` writes it; runs once per image."""
    if _FAST_META is None:
        return _META_JSON.encode(meta).encode()
    return "".join(_FAST_META(meta, 0)).encode()


def sample_members(sample: Sample) -> Iterator[tuple[str, bytes | FileBytes]]:
    """The sample's tar members in order; a generator, so `meta` is encoded after the JPEG was consumed."""
    yield f"{sample.key}.{JPG}", sample.jpeg
    yield f"{sample.key}.{CLS}", encode_label(sample.label)
    yield f"{sample.key}.{META}", encode_meta(sample.meta)


@dataclass
class WrittenShard:
    path: Path
    samples: int
    bytes: int
    sha256: str


def write_shard(path: str | Path, samples: Iterable[Sample], fsync: bool = True) -> WrittenShard:
    """Write `samples` as one shard plus its DALI index, atomically (temporary names, rename), and return its
    size and checksum. The output depends only on `samples`. Streams to disk (see `tar_stream`), so a shard
    never has to fit in memory: give images as `FileBytes`, and only a few buffers are.
    `fsync=False` skips flushing to the device before the rename: for writers that re-check checksums on
    resume (data_prep) and so need not pay a device flush per shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    index_lines: list[str] = []
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb", buffering=0) as f:
            with TarStream(f.fileno()) as stream:
                for sample in samples:  # the members of `sample_members`, spelled out: this runs per image
                    key = sample.key
                    jpg, cls, meta = f"{key}.{JPG}", f"{key}.{CLS}", f"{key}.{META}"
                    at_jpg, n_jpg = stream.add(jpg, sample.jpeg)
                    label = encode_label(sample.label)
                    meta_json = encode_meta(sample.meta)  # after the JPEG: see `Sample`
                    n_cls, n_meta = len(label), len(meta_json)
                    if n_meta < 512:  # as nearly always: both small members with one copy
                        at_cls, at_meta = stream.add_small([(cls, label), (meta, meta_json)])
                    else:
                        at_cls, at_meta = stream.add(cls, label)[0], stream.add(meta, meta_json)[0]
                    index_lines.append(
                        f"{JPG} {at_jpg} {n_jpg} {jpg} {CLS} {at_cls} {n_cls} {cls} {META} {at_meta} {n_meta} {meta}"
                    )
                size, sha256 = stream.finish()
            if fsync:
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed shard leaves nothing behind
        raise
    index = f"{INDEX_VERSION} {len(index_lines)}\n" + "".join(line + "\n" for line in index_lines)
    _atomic_write(path.with_name(index_name(path)), index.encode(), fsync)
    os.replace(tmp, path)
    return WrittenShard(path, len(index_lines), size, sha256)


def atomic_write(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to a temporary name beside `path`, then rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


_atomic_write = atomic_write


def read_index(path: str | Path) -> list[dict[str, tuple[int, int]]]:
    """Parse a DALI index: per sample, extension → (data offset, size)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ShardFormatError(
            f"DALI index {path} is missing; recreate it with `python -m data_prep index {path.parent.parent}`"
        ) from None
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != INDEX_VERSION or int(head[1]) != len(lines) - 1:
        raise ShardFormatError(f"{path} is not a {INDEX_VERSION} DALI index with a matching sample count")
    out = []
    for line in lines[1:]:
        f = line.split()
        out.append({f[i]: (int(f[i + 1]), int(f[i + 2])) for i in range(0, len(f), 4)})
    return out


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) for each sample of a shard, in order (used by verify, stats and tests)."""
    current, members = None, {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = info.name.partition(".")
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            f = tar.extractfile(info)
            members[ext] = f.read() if f else b""
    if current is not None:
        yield current, members


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Read into one reused buffer: a fresh `bytes` per block would be page-faulted in every time."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


@dataclass
class ShardEntry:
    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class SplitEntry:
    samples: int
    per_class: list[int]
    shards: list[ShardEntry]


@dataclass
class Manifest:
    """`OUT/manifest.json`. Records no worker or rank counts, so it is identical however it was produced."""

    format_version: int
    options: dict
    num_classes: int
    splits: dict[str, SplitEntry]
    reencoded: list[dict] = field(default_factory=list)
    """{"source", "split", "reason"} per image stored re-encoded."""
    quarantined: list[dict] = field(default_factory=list)
    """{"source", "split", "reason"} per input file left out."""
    stats: dict | None = None
    """Written by `data_prep stats`: {"mean_rgb": [3], "eigval": [3], "eigvec": [[3]*3]} on 0–255 pixels."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    def save(self, root: str | Path) -> None:
        _atomic_write(Path(root) / MANIFEST, self.to_json().encode())

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        splits = {
            name: SplitEntry(s["samples"], list(s["per_class"]), [ShardEntry(**e) for e in s["shards"]])
            for name, s in d["splits"].items()
        }
        return cls(
            d["format_version"],
            d["options"],
            d["num_classes"],
            splits,
            d.get("reencoded", []),
            d.get("quarantined", []),
            d.get("stats"),
        )

    def shard_paths(self, root: str | Path, split: str) -> list[Path]:
        if split not in self.splits:
            raise ShardFormatError(
                f"{root} has no '{split}' split (it has {', '.join(self.splits) or 'none'}); "
                f"run `python -m data_prep imagenet` with the {split} images"
            )
        return [Path(root) / split / s.name for s in self.splits[split].shards]


def load_manifest(root: str | Path) -> Manifest:
    """Read `root/manifest.json`, refusing anything that is not this format."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ShardFormatError(
            f"no prepared dataset at {root}: {MANIFEST} is missing; create one with "
            "`python -m data_prep imagenet SRC --out OUT` (or `synthetic` for a stand-in)"
        )
    try:
        d = json.loads(path.read_text())
        version = d["format_version"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ShardFormatError(f"{path} is not a dist-vgg manifest ({e})") from None
    if version != FORMAT_VERSION:
        raise ShardFormatError(
            f"{path} has shard format version {version}; this dist-vgg reads version {FORMAT_VERSION}: "
            "re-run data_prep with this version"
        )
    return Manifest.from_dict(d)


def read_classes(root: str | Path) -> list[tuple[str, str]]:
    """(WNID, name) per class index from `classes.txt`; the name is '' when the source gave none."""
    path = Path(root) / CLASSES
    if not path.is_file():
        raise ShardFormatError(f"{path} is missing; re-run data_prep")
    out = []
    for line in path.read_text().splitlines():
        wnid, _, name = line.partition("\t")
        out.append((wnid, name))
    return out


def write_classes(root: str | Path, classes: list[tuple[str, str]]) -> None:
    text = "".join(f"{w}\t{n}\n" if n else f"{w}\n" for w, n in classes)
    _atomic_write(Path(root) / CLASSES, text.encode())
