"""Where ImageNet comes from: the original archives (read in place, never extracted), extracted folders, or
Kaggle's layout. Every source becomes the same sorted list of `Item`s (a file's bytes by path, offset and
size), so archives and folders give byte-identical shards and any worker or rank can read any image.

Layouts understood (SRC is the folder given on the command line):
- archives: `ILSVRC2012_img_train.tar` (a tar of `<wnid>.tar` per class), `ILSVRC2012_img_val.tar` (flat) and
  the devkit `ILSVRC2012_devkit_t12.tar.gz` (or its extracted folder) for the validation labels;
- folders: `train/<wnid>/*`, and `val/<wnid>/*` or a flat `val/` labelled by the devkit or Kaggle's
  `LOC_val_solution.csv`;
- Kaggle: `ILSVRC/Data/CLS-LOC/{train,val}` beside `LOC_val_solution.csv` and `LOC_synset_mapping.txt`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from data_prep.errors import PrepError

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12"
DEVKIT_TAR = f"{DEVKIT}.tar.gz"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META_MAT = "data/meta.mat"
SYNSETS_TXT = "data/ILSVRC2012_synsets.txt"
"""Plain-text stand-in for meta.mat: `<ILSVRC2012_ID>\\t<WNID>\\t<words>` per line (written by `synthetic`)."""
KAGGLE_SOLUTION = "LOC_val_solution.csv"
KAGGLE_SYNSETS = "LOC_synset_mapping.txt"
KAGGLE_DATA = "ILSVRC/Data/CLS-LOC"
WNID = re.compile(r"^n\d{8}$")
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")

EXPECTED = (
    "expected one of: the archives (ILSVRC2012_img_train.tar and/or ILSVRC2012_img_val.tar + "
    "ILSVRC2012_devkit_t12.tar.gz); folders train/<wnid>/*.JPEG and val/<wnid>/*.JPEG or a flat val/ with "
    "the devkit or LOC_val_solution.csv; or Kaggle's ILSVRC/Data/CLS-LOC/{train,val}"
)


@dataclass(frozen=True, slots=True)
class Item:
    """One input file: `name` is its canonical source name `<wnid>/<file>` (the same for archives and
    folders); its bytes are `size` bytes at `offset` of `path`."""

    split: str
    wnid: str
    name: str
    path: str
    offset: int
    size: int


@dataclass
class Source:
    """What a SRC folder holds: the classes (sorted WNIDs, with names where known) and the items per split,
    each split sorted by canonical name."""

    description: str
    wnids: list[str]
    names: dict[str, str]
    items: dict[str, list[Item]] = field(default_factory=dict)


_FDS: dict[str, int] = {}
"""Open input files of this process (the archives are read by offset, so one descriptor each is enough)."""


def read_item(item: Item, start: int = 0, length: int | None = None) -> bytes:
    """The item's bytes (or `length` bytes from `start` within it)."""
    length = item.size - start if length is None else length
    if item.offset == 0:  # a plain file: open, read, close (a folder of 1.28 M files must not pile up fds)
        fd = os.open(item.path, os.O_RDONLY)
        try:
            data = os.pread(fd, length, start)
        finally:
            os.close(fd)
    else:
        data = os.pread(_archive_fd(item.path), length, item.offset + start)
    if len(data) != length:
        raise PrepError(f"{item.path}: short read of {item.name} (the input changed while running?)")
    return data


def read_item_into(item: Item, view: memoryview) -> None:
    """Fill `view` (exactly `item.size` bytes) with the item's bytes: the copy path reads each image straight
    into the shard writer's buffer (see `dist_vgg.data.tar_stream`). Runs once per image: one `preadv`."""
    size = item.size
    if len(view) != size:
        raise ValueError(f"{item.name}: a {len(view)}-byte view for a {size}-byte item")
    if item.offset == 0:
        fd = os.open(item.path, os.O_RDONLY)
        try:
            done = os.preadv(fd, (view,), 0)
            while 0 < done < size:  # a short read: go on (a signal), until the file ends
                n = os.preadv(fd, (view[done:],), done)
                done = done + n if n else -1
        finally:
            os.close(fd)
    else:
        fd = _archive_fd(item.path)
        done = os.preadv(fd, (view,), item.offset)
        while 0 < done < size:
            n = os.preadv(fd, (view[done:],), item.offset + done)
            done = done + n if n else -1
    if done != size:
        raise PrepError(f"{item.path}: short read of {item.name} (the input changed while running?)")


def read_head_tail(item: Item, head: int, tail: int) -> tuple[bytes, bytes]:
    """The item's first `head` and last `tail` bytes with one open (the `--fast` check reads only these);
    an item no longer than `head + tail` comes whole, as (data, data)."""
    if item.size <= head + tail:
        data = read_item(item)
        return data, data
    if item.offset == 0:
        fd = os.open(item.path, os.O_RDONLY)
        try:
            first = os.pread(fd, head, 0)
            last = os.pread(fd, tail, item.size - tail)
        finally:
            os.close(fd)
    else:
        fd = _archive_fd(item.path)
        first = os.pread(fd, head, item.offset)
        last = os.pread(fd, tail, item.offset + item.size - tail)
    if len(first) != head or len(last) != tail:
        raise PrepError(f"{item.path}: short read of {item.name} (the input changed while running?)")
    return first, last


def _archive_fd(path: str) -> int:
    fd = _FDS.get(path)
    if fd is None:
        fd = _FDS[path] = os.open(path, os.O_RDONLY)
    return fd


def open_source(src: str | Path) -> Source:
    """Recognise SRC's layout and list every image; raises PrepError saying what was expected and found."""
    src = Path(src)
    if not src.is_dir():
        raise PrepError(f"SRC {src} is not a folder; {EXPECTED}")
    if (src / TRAIN_TAR).is_file() or (src / VAL_TAR).is_file():
        return _from_archives(src)
    if (src / KAGGLE_DATA).is_dir():
        return _from_folders(src / KAGGLE_DATA, src, f"Kaggle layout at {src}")
    if (src / "train").is_dir() or (src / "val").is_dir():
        return _from_folders(src, src, f"folders at {src}")
    found = ", ".join(sorted(p.name for p in src.iterdir())[:12]) or "nothing"
    raise PrepError(f"SRC {src} has no ImageNet layout; {EXPECTED}; found: {found}")


# ---------------------------------------------------------------- labels: devkit, Kaggle


@dataclass
class ValLabels:
    """Validation file name → WNID, and WNID → class name where the source gives names."""

    by_file: dict[str, str]
    names: dict[str, str]
    origin: str


def _safe_member(name: str, archive: Path) -> str:
    p = PurePosixPath(name)
    if name.startswith("/") or p.is_absolute() or ".." in p.parts:
        raise PrepError(
            f"{archive} holds member {name!r} with an absolute path or '..'; refusing to read it "
            "(it may be a malicious archive): re-download the archive"
        )
    return name


def _devkit_files(src: Path) -> tuple[dict[str, bytes], str] | None:
    """The devkit's data files by relative name (`data/...`), from its tar.gz or its extracted folder."""
    wanted = (GROUND_TRUTH, META_MAT, SYNSETS_TXT)
    if (src / DEVKIT_TAR).is_file():
        out: dict[str, bytes] = {}
        with tarfile.open(src / DEVKIT_TAR, "r:gz") as tar:
            for info in tar:
                rel = _safe_member(info.name, src / DEVKIT_TAR)
                rel = rel.split("/", 1)[1] if rel.startswith(DEVKIT + "/") else rel
                if info.isfile() and rel in wanted:
                    f = tar.extractfile(info)
                    out[rel] = f.read() if f else b""
        return out, str(src / DEVKIT_TAR)
    for folder in (src / DEVKIT, src):
        if (folder / GROUND_TRUTH).is_file():
            return {w: (folder / w).read_bytes() for w in wanted if (folder / w).is_file()}, str(folder)
    return None


def _synsets_from_devkit(files: dict[str, bytes], origin: str) -> dict[int, tuple[str, str]]:
    """ILSVRC2012_ID → (WNID, words), from meta.mat (needs scipy) or the plain-text map."""
    if SYNSETS_TXT in files:
        out = {}
        for line in files[SYNSETS_TXT].decode().splitlines():
            if line.strip():
                ident, wnid, *words = line.split("\t")
                out[int(ident)] = (wnid, words[0] if words else "")
        return out
    if META_MAT in files:
        try:
            import scipy.io
        except ImportError:
            raise PrepError(
                f"{origin}: reading {META_MAT} (MATLAB format) needs scipy: `pip install scipy`"
            ) from None
        mat = scipy.io.loadmat(io.BytesIO(files[META_MAT]), squeeze_me=True)
        out = {}
        for s in mat["synsets"]:
            ident = int(s["ILSVRC2012_ID"])
            if int(s["num_children"]) == 0:
                out[ident] = (str(s["WNID"]), str(s["words"]))
        return out
    raise PrepError(f"{origin} has neither {META_MAT} nor {SYNSETS_TXT}: the ILSVRC id → WNID map is missing")


def _devkit_labels(src: Path) -> ValLabels | None:
    found = _devkit_files(src)
    if found is None:
        return None
    files, origin = found
    if GROUND_TRUTH not in files:
        raise PrepError(f"{origin} has no {GROUND_TRUTH}; re-download the devkit")
    synsets = _synsets_from_devkit(files, origin)
    by_file = {}
    for i, line in enumerate(files[GROUND_TRUTH].decode().split(), start=1):
        ident = int(line)
        if ident not in synsets:
            raise PrepError(
                f"{origin}: {GROUND_TRUTH} line {i} names ILSVRC id {ident}, unknown to the devkit"
            )
        by_file[f"ILSVRC2012_val_{i:08d}.JPEG"] = synsets[ident][0]
    names = {w: n for w, n in synsets.values()}
    return ValLabels(by_file, names, origin)


def _kaggle_labels(src: Path) -> ValLabels | None:
    path = src / KAGGLE_SOLUTION
    if not path.is_file():
        return None
    by_file = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                by_file[row["ImageId"] + ".JPEG"] = row["PredictionString"].split()[0]
            except (KeyError, IndexError):
                raise PrepError(f"{path}: expected columns ImageId,PredictionString; found {row}") from None
    return ValLabels(by_file, {}, str(path))


def _class_names(src: Path) -> dict[str, str]:
    """WNID → words from the devkit or Kaggle's synset mapping, when SRC has either (names are optional)."""
    found = _devkit_files(src)
    if found is not None:
        return {w: n for w, n in _synsets_from_devkit(*found).values()}
    names = {}
    if (src / KAGGLE_SYNSETS).is_file():
        for line in (src / KAGGLE_SYNSETS).read_text().splitlines():
            wnid, _, words = line.partition(" ")
            names[wnid] = words
    return names


def _val_labels(src: Path) -> ValLabels:
    labels = _devkit_labels(src) or _kaggle_labels(src)
    if labels is None:
        raise PrepError(
            f"a flat val/ needs ground-truth labels: put {DEVKIT_TAR} (or its extracted folder) or "
            f"{KAGGLE_SOLUTION} in {src}"
        )
    return labels


def _label_val(names: list[str], labels: ValLabels, where: str) -> list[tuple[str, str]]:
    out = []
    for name in names:
        wnid = labels.by_file.get(name)
        if wnid is None:
            raise PrepError(
                f"validation image {where}/{name} has no ground-truth label in {labels.origin}; "
                "remove it or use the matching ground truth"
            )
        out.append((wnid, name))
    return out


# ---------------------------------------------------------------- folders


def _check_wnid(name: str, where: Path) -> None:
    if not WNID.match(name):
        raise PrepError(
            f"{where}/{name}: expected a class folder named by its WNID (like n01440764), found {name!r}; "
            f"{EXPECTED}"
        )


def _list_files(folder: Path) -> list[tuple[str, int]]:
    out = []
    for e in os.scandir(folder):
        if e.is_dir(follow_symlinks=False):
            raise PrepError(f"{folder}: expected image files only, found folder {e.name}; {EXPECTED}")
        out.append((e.name, e.stat().st_size))
    return out


def _from_folders(data: Path, src: Path, description: str) -> Source:
    items: dict[str, list[Item]] = {}
    train = data / "train"
    if train.is_dir():
        classes = sorted(e.name for e in os.scandir(train))
        if not classes:
            raise PrepError(f"{train} is empty; expected train/<wnid>/*.JPEG")
        lst = []
        for wnid in classes:
            _check_wnid(wnid, train)
            if not (train / wnid).is_dir():
                raise PrepError(f"{train}/{wnid}: expected a class folder, found a file; {EXPECTED}")
            folder = f"{train}/{wnid}"  # plain strings: a Path per file costs more than reading its header
            for fname, size in _list_files(train / wnid):
                lst.append(Item("train", wnid, f"{wnid}/{fname}", f"{folder}/{fname}", 0, size))
        items["train"] = lst
    names: dict[str, str] = {}
    val = data / "val"
    if val.is_dir():
        entries = list(os.scandir(val))
        dirs = [e for e in entries if e.is_dir()]
        lst = []
        if dirs and len(dirs) == len(entries):
            for e in dirs:
                _check_wnid(e.name, val)
                for fname, size in _list_files(val / e.name):
                    lst.append(Item("val", e.name, f"{e.name}/{fname}", f"{val}/{e.name}/{fname}", 0, size))
        elif dirs:
            raise PrepError(f"{val} mixes class folders and files; expected val/<wnid>/*.JPEG or a flat val/")
        else:
            labels = _val_labels(src)
            names = labels.names
            sizes = {e.name: e.stat().st_size for e in entries}
            for wnid, fname in _label_val(sorted(sizes), labels, str(val)):
                lst.append(Item("val", wnid, f"{wnid}/{fname}", f"{val}/{fname}", 0, sizes[fname]))
        items["val"] = lst
    folders = {e.name for e in os.scandir(train)} if train.is_dir() else set()
    return _finish(description, items, names or _class_names(src), folders)


# ---------------------------------------------------------------- archives


class _Window(io.RawIOBase):
    """A read-only, seekable view of `size` bytes at `offset` of an open file: an inner tar in place."""

    def __init__(self, f: io.BufferedReader, offset: int, size: int):
        self.f, self.offset, self.size, self.pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = {0: pos, 1: self.pos + pos, 2: self.size + pos}[whence]
        return self.pos

    def readinto(self, b) -> int:  # type: ignore[override]
        n = max(0, min(len(b), self.size - self.pos))
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _tar_files(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    out = []
    for info in tar:
        _safe_member(info.name, archive)
        if info.isdir():
            continue
        if not info.isfile():
            raise PrepError(f"{archive}: member {info.name!r} is not a regular file; refusing it")
        out.append(info)
    return out


def _from_archives(src: Path) -> Source:
    items: dict[str, list[Item]] = {}
    names: dict[str, str] = {}
    train_tar = src / TRAIN_TAR
    class_tars: set[str] = set()
    if train_tar.is_file():
        lst = []
        with open(train_tar, "rb") as f, tarfile.open(fileobj=f, mode="r:") as outer:
            for info in _tar_files(outer, train_tar):
                base = PurePosixPath(info.name).name
                wnid = base.removesuffix(".tar")
                if not base.endswith(".tar") or not WNID.match(wnid):
                    raise PrepError(
                        f"{train_tar}: expected per-class tars named <wnid>.tar (like n01440764.tar), "
                        f"found {info.name!r}"
                    )
                class_tars.add(wnid)
                inner_name = f"{train_tar}:{info.name}"
                window = _Window(f, info.offset_data, info.size)
                with tarfile.open(fileobj=window, mode="r:") as inner:  # type: ignore[arg-type]
                    for m in _tar_files(inner, Path(inner_name)):
                        fname = PurePosixPath(m.name).name
                        lst.append(
                            Item(
                                "train",
                                wnid,
                                f"{wnid}/{fname}",
                                str(train_tar),
                                info.offset_data + m.offset_data,
                                m.size,
                            )
                        )
        items["train"] = lst
    val_tar = src / VAL_TAR
    if val_tar.is_file():
        labels = _val_labels(src)
        names = labels.names
        with tarfile.open(val_tar, mode="r:") as tar:
            members = {PurePosixPath(m.name).name: m for m in _tar_files(tar, val_tar)}
        lst = [
            Item(
                "val", wnid, f"{wnid}/{fname}", str(val_tar), members[fname].offset_data, members[fname].size
            )
            for wnid, fname in _label_val(sorted(members), labels, str(val_tar))
        ]
        items["val"] = lst
    return _finish(f"archives at {src}", items, names or _class_names(src), class_tars)


def _finish(
    description: str, items: dict[str, list[Item]], names: dict[str, str], train_classes: set[str]
) -> Source:
    """Sort and check the listing. The classes are the training class folders (or per-class tars), even
    empty ones, so that one empty folder cannot shift every later class index."""
    if not any(items.values()):
        raise PrepError(f"{description}: no images found; {EXPECTED}")
    if "train" in items:
        wnids = sorted(train_classes)
        unknown = sorted({i.wnid for i in items.get("val", [])} - set(wnids))
        if unknown:
            raise PrepError(
                f"{description}: validation labels name classes with no training folder: {', '.join(unknown[:5])}"
            )
    else:
        wnids = sorted({i.wnid for i in items["val"]})
    for split in items:
        items[split].sort(key=lambda i: i.name)
        dup = next((a.name for a, b in zip(items[split], items[split][1:]) if a.name == b.name), None)
        if dup:
            raise PrepError(f"{description}: {split} holds {dup} twice")
    return Source(description, wnids, {w: names.get(w, "") for w in wnids}, items)
