"""A synthetic ImageNet in ImageNet's own raw layout, so the whole flow (data_prep → train → eval) runs with
no download, and the tests can inject the problem files the real dataset holds.

Each class is a shape (circle, square, triangle, ...) filled with a texture (solid, stripes, checks, dots), drawn
at a random scale (25–90 % of the shorter side), position, rotation and colour over a noisy background with
clutter (smaller shapes of other kinds and lines): learnable, but not from one pixel or one colour, and scale
jittering matters. Image sizes spread like ImageNet's (`imagenet`: shorter side 150–500, aspect 0.5–2) or
scaled for 32–64 px crops (`small`: shorter side 40–90). Every image depends only on (seed, split, class,
index): the output is the same for any number of workers.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import random
import shutil
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_prep import sources
from data_prep.errors import PrepError

SHAPES = ("circle", "triangle", "star", "cross", "ring", "square", "hexagon", "diamond")
"""Ordered most-distinct first, so a dataset of few classes gets the shapes that stay apart at small sizes."""
TEXTURES = ("solid", "stripes", "checks", "dots")
SIZES = {"small": (40, 90), "imagenet": (150, 500)}
"""Shorter-side range (pixels) per `--size`."""
OBJECT_SCALE = {"small": (0.5, 0.95), "imagenet": (0.25, 0.9)}
"""The object's diameter as a fraction of the shorter side. At `small` sizes (32–64 px crops) an object under
~15 px loses its shape (a hexagon becomes a disc), so the range starts higher: the classes stay learnable
by a tiny net in minutes, and a random crop still often cuts the object, so scale jittering matters."""
CLASS_HUE_SPREAD = 0.08
"""σ of the object's hue around its class hue (k / K on the colour wheel)."""
CLUTTER = {"small": (1, 4), "imagenet": (2, 7)}
"""How many small distractor shapes (of other kinds) an image gets."""
PROBLEM_KINDS = ("cmyk", "grayscale", "png", "exif", "progressive", "truncated", "empty", "text")
EXPECTED_ACTION = {
    "cmyk": "reencode",
    "grayscale": "reencode",
    "png": "reencode",
    "exif": "reencode",
    "progressive": "copy",
    "truncated": "quarantine",
    "empty": "quarantine",
    "text": "quarantine",
}
"""What `data_prep imagenet` must do with each injected problem file (by default options)."""
PROBLEMS_FILE = "PROBLEMS.json"


@dataclass(frozen=True)
class SynthSpec:
    """What to generate."""

    classes: int
    """Number of classes K (WNIDs are random but fixed by the seed)."""
    train_per_class: int
    """Training images per class."""
    val_per_class: int
    """Validation images per class (flat val/, labelled by the devkit-style ground truth)."""
    size: str = "imagenet"
    """`imagenet` (shorter side 150–500) or `small` (40–90, for 32–64 px crops)."""
    seed: int = 0
    """Everything generated depends only on this."""
    problems: bool = False
    """Add one file of each kind in PROBLEM_KINDS to train (and a grayscale and a truncated one to val),
    listed in PROBLEMS.json."""
    labels: str = "devkit"
    """How the flat val/ is labelled: `devkit` (ILSVRC2012_devkit_t12/) or `kaggle` (LOC_val_solution.csv)."""

    def __post_init__(self) -> None:
        if self.classes < 1 or self.train_per_class < 0 or self.val_per_class < 0:
            raise PrepError("--classes must be ≥ 1 and --train-per-class/--val-per-class ≥ 0")
        if self.size not in SIZES:
            raise PrepError(f"--size {self.size!r}: choose one of {', '.join(SIZES)}")
        if self.labels not in ("devkit", "kaggle"):
            raise PrepError(f"--labels {self.labels!r}: choose devkit or kaggle")


def class_table(spec: SynthSpec) -> list[tuple[str, int, str]]:
    """(WNID, ILSVRC2012 id, name) per class, in sorted-WNID order. ILSVRC ids are a seeded permutation of
    1..K, as in the real devkit where they do not follow WNID order (a label off by that map shows)."""
    rng = random.Random(f"{spec.seed}/wnids")
    wnids = sorted(f"n{n:08d}" for n in rng.sample(range(1_000_000, 15_000_000), spec.classes))
    ids = list(range(1, spec.classes + 1))
    rng.shuffle(ids)
    return [(w, ids[k], describe(k)) for k, w in enumerate(wnids)]


def describe(k: int) -> str:
    shape, texture, variant = _design(k)
    return f"{texture} {shape}" + (f" variant {variant}" if variant else "")


def _design(k: int) -> tuple[str, str, int]:
    return (
        SHAPES[k % len(SHAPES)],
        TEXTURES[(k // len(SHAPES)) % len(TEXTURES)],
        k // (len(SHAPES) * len(TEXTURES)),
    )


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6, "star": 10, "cross": 12}[shape]
    pts = []
    for i in range(corners):
        a = rot + 2 * math.pi * i / corners + (math.pi / 4 if shape == "square" else 0)
        rr = r
        if shape == "star":
            rr = r if i % 2 == 0 else r * 0.45
        elif shape == "diamond":
            rr = r if i % 2 == 0 else r * 0.6
        elif shape == "cross":
            rr = r if i % 3 != 0 else r * 0.45
            a = rot + 2 * math.pi * (i // 3) / 4 + (i % 3 - 1) * 0.32
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float, fill
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(1, int(r * 0.35)))
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=fill)


def _texture(
    kind: str, w: int, h: int, rng: np.random.Generator, c1: np.ndarray, c2: np.ndarray, period: float
):
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        on = ((x * math.cos(a) + y * math.sin(a)) / period) % 2 < 1
    elif kind == "checks":
        on = ((x // period + y // period) % 2) == 0
    else:  # dots
        on = ((x % period - period / 2) ** 2 + (y % period - period / 2) ** 2) < (period * 0.3) ** 2
    return np.where(on[..., None], c1, c2)


def render(spec: SynthSpec, k: int, split: str, index: int) -> Image.Image:
    """One image of class k (sorted-WNID index): deterministic in (seed, split, k, index)."""
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, k, index])
    lo, hi = SIZES[spec.size]
    short = int(rng.integers(lo, hi + 1))
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
    # background: a colour gradient plus noise
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    grad = (c0 + (c1 - c0) * t[:, None]).astype(np.float32)
    bg = (
        np.broadcast_to(grad[None, :, :], (h, w, 3))
        if len(t) == w
        else np.broadcast_to(grad[:, None, :], (h, w, 3))
    )
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * 12
    img = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    shape, texture, variant = _design(k)
    # clutter: small shapes of other kinds and lines, never the class's own shape
    others = [s for s in SHAPES if s != shape]
    for _ in range(int(rng.integers(*CLUTTER[spec.size]))):
        r = short * rng.uniform(0.04, 0.14)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        _draw_shape(
            draw,
            others[int(rng.integers(len(others)))],
            rng.uniform(0, w),
            rng.uniform(0, h),
            r,
            rng.uniform(0, 6.3),
            fill,
        )
    for _ in range(int(rng.integers(1, 5))):
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line(
            [(rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(0, w), rng.uniform(0, h))],
            fill=fill,
            width=max(1, short // 60),
        )
    # the object: the class's shape and texture, random scale, position, rotation and colours
    r = short * rng.uniform(*OBJECT_SCALE[spec.size]) / 2
    cx, cy = rng.uniform(r * 0.7, w - r * 0.7), rng.uniform(r * 0.7, h - r * 0.7)
    mask = Image.new("L", (w, h), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, cx, cy, r, rng.uniform(0, 6.3), 255)
    # The object's colour leans towards a class hue (spread wide enough that neighbouring classes overlap):
    # a cue a net picks up early, while telling every class apart still takes the shape.
    hue = (k / spec.classes + rng.normal(0.0, CLASS_HUE_SPREAD)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.5, 1.0))
    fg1 = (np.array(rgb) * 255).astype(np.uint8)
    fg2 = (255 - fg1 + rng.integers(-40, 41, 3)).clip(0, 255).astype(np.uint8)
    if variant:  # classes beyond len(SHAPES)*len(TEXTURES): a hue band tells variants apart
        fg1[variant % 3] = 200 + (variant * 37) % 56
    period = max(2.0, r * rng.uniform(0.15, 0.35))
    tex = Image.fromarray(np.ascontiguousarray(_texture(texture, w, h, rng, fg1, fg2, period)))
    img.paste(tex, (0, 0), mask)
    return img


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=kw.pop("quality", 90), **kw)
    return buf.getvalue()


def problem_bytes(kind: str, img: Image.Image) -> bytes:
    """A file of the given problem kind made from `img`."""
    if kind == "cmyk":
        return _jpeg(img.convert("CMYK"))
    if kind == "grayscale":
        return _jpeg(img.convert("L"))
    if kind == "png":
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    if kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6
        return _jpeg(img.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    if kind == "progressive":
        return _jpeg(img, progressive=True)
    if kind == "truncated":
        data = _jpeg(img)
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    if kind == "text":
        return b"This is not an image: a text file that ended up in the image folder.\n"
    raise ValueError(kind)


def _write_class(job: tuple[SynthSpec, int, str, str, list[tuple[int, str]]]) -> None:
    spec, k, split, folder, files = job
    os.makedirs(folder, exist_ok=True)
    for index, fname in files:
        Path(folder, fname).write_bytes(_jpeg(render(spec, k, split, index)))


def generate(root: str | Path, spec: SynthSpec, workers: int = 1) -> dict:
    """Write the dataset under `root` (folders, devkit-style labels); returns a summary."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise PrepError(f"{root} is not empty; choose a new folder for the synthetic dataset")
    table = class_table(spec)
    jobs = []
    for k, (wnid, _, _) in enumerate(table):
        files = [(i, f"{wnid}_{i + 1}.JPEG") for i in range(spec.train_per_class)]
        jobs.append((spec, k, "train", str(root / "train" / wnid), files))
    # val: flat, numbered in a seeded order mixing classes, like ILSVRC2012_val_XXXXXXXX.JPEG
    val = [(k, i) for k in range(spec.classes) for i in range(spec.val_per_class)]
    random.Random(f"{spec.seed}/val").shuffle(val)
    val_class = [k for k, _ in val]
    by_class: dict[int, list[tuple[int, str]]] = {}
    for n, (k, i) in enumerate(val, start=1):
        by_class.setdefault(k, []).append((i, f"ILSVRC2012_val_{n:08d}.JPEG"))
    jobs += [(spec, k, "val", str(root / "val"), files) for k, files in sorted(by_class.items())]
    (root / "val").mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_class, jobs))
    else:
        for job in jobs:
            _write_class(job)
    problems = _write_problems(root, spec, table, val_class) if spec.problems else []
    _write_labels(root, spec, table, val_class)
    return {
        "classes": spec.classes,
        "train": spec.classes * spec.train_per_class,
        "val": len(val),
        "problems": len(problems),
    }


def _write_problems(root: Path, spec: SynthSpec, table, val_class: list[int]) -> list[dict]:
    out = []
    for j, kind in enumerate(PROBLEM_KINDS):
        k = j % spec.classes
        wnid = table[k][0]
        fname = f"{wnid}_{90000 + j}.JPEG"
        img = render(spec, k, "train", 90000 + j)
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "train" / wnid / fname).write_bytes(problem_bytes(kind, img))
        out.append(
            {"split": "train", "source": f"{wnid}/{fname}", "kind": kind, "expect": EXPECTED_ACTION[kind]}
        )
    for kind in ("grayscale", "truncated"):
        k = len(val_class) % spec.classes
        val_class.append(k)
        fname = f"ILSVRC2012_val_{len(val_class):08d}.JPEG"
        img = render(spec, k, "val", 90000 + len(val_class))
        (root / "val" / fname).write_bytes(problem_bytes(kind, img))
        out.append(
            {
                "split": "val",
                "source": f"{table[k][0]}/{fname}",
                "kind": kind,
                "expect": EXPECTED_ACTION[kind],
            }
        )
    (root / PROBLEMS_FILE).write_text(json.dumps(out, indent=1) + "\n")
    return out


def _write_labels(root: Path, spec: SynthSpec, table, val_class: list[int]) -> None:
    if spec.labels == "kaggle":
        rows = [f"ILSVRC2012_val_{n:08d},{table[k][0]} 0 0 10 10" for n, k in enumerate(val_class, start=1)]
        (root / sources.KAGGLE_SOLUTION).write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
        (root / sources.KAGGLE_SYNSETS).write_text("".join(f"{w} {name}\n" for w, _, name in table))
        return
    data = root / sources.DEVKIT / "data"
    data.mkdir(parents=True)
    (root / sources.DEVKIT / sources.GROUND_TRUTH).write_text("".join(f"{table[k][1]}\n" for k in val_class))
    by_id = sorted(table, key=lambda t: t[1])
    (root / sources.DEVKIT / sources.SYNSETS_TXT).write_text("".join(f"{i}\t{w}\t{n}\n" for w, i, n in by_id))
    mat = meta_mat(by_id)
    if mat is not None:
        (root / sources.DEVKIT / sources.META_MAT).write_bytes(mat)


def meta_mat(by_id: list[tuple[str, int, str]]) -> bytes | None:
    """The devkit's meta.mat (a MATLAB struct array `synsets`) for these classes; None without scipy."""
    try:
        import scipy.io
    except ImportError:
        return None
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    arr = np.zeros((len(by_id), 1), dtype=[(f, "O") for f in fields])
    for row, (wnid, ident, name) in enumerate(by_id):
        arr[row, 0] = (ident, wnid, name, f"synthetic class: {name}", 0, np.zeros((0, 0)), 0, 0)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": arr})
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by dist-vgg data_prep synthetic".ljust(116)  # no timestamp
    return bytes(data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def pack_archives(folders: str | Path, dest: str | Path) -> None:
    """Pack a folder-layout dataset (as `generate` writes it) into ImageNet's original archives in `dest`:
    ILSVRC2012_img_train.tar (a tar of per-class tars), ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz."""
    folders, dest = Path(folders), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / sources.TRAIN_TAR, "w", format=tarfile.USTAR_FORMAT) as outer:
        for cls in sorted((folders / "train").iterdir()):
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w", format=tarfile.USTAR_FORMAT) as inner:
                for f in sorted(cls.iterdir()):
                    _add(inner, f.name, f.read_bytes())
            _add(outer, f"{cls.name}.tar", inner_buf.getvalue())
    with tarfile.open(dest / sources.VAL_TAR, "w", format=tarfile.USTAR_FORMAT) as tar:
        for f in sorted((folders / "val").iterdir()):
            _add(tar, f.name, f.read_bytes())
    if (folders / sources.DEVKIT).is_dir():
        with tarfile.open(dest / sources.DEVKIT_TAR, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
            for f in sorted((folders / sources.DEVKIT).rglob("*")):
                if f.is_file():
                    _add(tar, f"{sources.DEVKIT}/{f.relative_to(folders / sources.DEVKIT)}", f.read_bytes())
    for name in (sources.KAGGLE_SOLUTION, sources.KAGGLE_SYNSETS, PROBLEMS_FILE):
        if (folders / name).is_file():
            shutil.copyfile(folders / name, dest / name)


def generate_archives(root: str | Path, spec: SynthSpec, workers: int = 1) -> dict:
    """Like `generate`, but writes the original archives instead of folders."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise PrepError(f"{root} is not empty; choose a new folder for the synthetic dataset")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        summary = generate(Path(tmp) / "folders", spec, workers)
        pack_archives(Path(tmp) / "folders", root)
    return summary
