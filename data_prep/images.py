"""Checking and re-encoding one image. Why a separate module: the decision "copy the JPEG bytes unchanged,
re-encode, or quarantine" is the fidelity contract of the whole dataset, so it lives in one small place.

Copied unchanged: plain baseline (or progressive, unless asked) 3-component JPEGs without EXIF rotation.
Re-encoded to RGB JPEG (quality `REENCODE_QUALITY`, 4:2:0 like ImageNet's own files): CMYK/YCCK and grayscale
JPEGs, other decodable formats (ImageNet holds a PNG named .JPEG), JPEGs with EXIF orientation other than 1
(stored upright, because DALI applies the tag and PIL does not), optionally progressive JPEGs, and with
`resize_shorter` images whose shorter side exceeds it. Quarantined: empty, truncated, undecodable or
non-image files.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

import simplejpeg
from PIL import Image, ImageOps

REENCODE_QUALITY = 95
"""JPEG quality of every re-encoded image (one more JPEG generation; 95 keeps the loss well below ImageNet's own)."""

Image.MAX_IMAGE_PIXELS = None  # ImageNet has a few very large images; they are trusted input, not a zip bomb


@dataclass(frozen=True)
class CheckOptions:
    """How strictly to check, and what to re-encode."""

    fast: bool = False
    """Check JPEG headers and markers only (no full decode)."""
    reencode_progressive: bool = False
    """Re-encode progressive JPEGs as baseline (GPU hardware decoders take baseline only)."""
    resize_shorter: int | None = None
    """Re-encode images whose shorter side exceeds this, down to it (Lanczos)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one input file. `action` is 'copy', 'reencode' or 'quarantine'."""

    action: str
    reason: str = ""
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int
    progressive: bool
    orientation: int
    adobe_transform: int | None


class BadImage(Exception):
    """The file cannot be used; the message is the quarantine reason."""


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_MARKER_AND_LENGTH = struct.Struct(">HH")
_PASS = frozenset({0xC4, 0xCC, 0xDB, 0xDD, 0xE0, 0xE2, 0xFE})
"""Segments the walk steps over: DHT, DAC, DQT, DRI, APP0 (JFIF), APP2 (ICC), COM."""
EOI_WINDOW = 4096
"""The EOI marker must lie in the file's last this many bytes (encoders may pad after it)."""


def parse_jpeg_header(data: bytes, tail: bytes | None = None) -> JpegHeader:
    """Walk the markers from SOI to SOS and check that the file ends with EOI; raises BadImage.

    `data` is the whole file, or only its head when `tail` (the file's last `EOI_WINDOW` bytes) is given: the
    walk never reads past `data`, so a header longer than the head reads as truncated and the caller retries
    on the whole file. One pass of index arithmetic, copying only the segments it reads (SOF, EXIF, Adobe):
    the `--fast` check runs this once per image."""
    if not data.startswith(b"\xff\xd8"):
        raise BadImage("not a JPEG (no SOI marker)")
    pos, n = 2, len(data)
    sof: tuple[int, int, int, bool] | None = None
    orientation, adobe = 1, None
    unpack = _MARKER_AND_LENGTH.unpack_from
    while True:
        if pos + 4 > n:
            raise BadImage("truncated JPEG header")
        word, length = unpack(data, pos)  # the marker (0xFFxx) and, for most, its segment's length
        if word == 0xFFFF:
            pos += 1  # a fill byte
            continue
        if word >> 8 != 0xFF:
            raise BadImage(f"corrupt JPEG marker structure at byte {pos}")
        marker = word & 0xFF
        if marker in _STANDALONE:
            pos += 2
            continue
        end = pos + 2 + length
        if length < 2 or end > n:
            raise BadImage("truncated JPEG header segment")
        if marker in _PASS:  # tables, JFIF, comments: most segments of a JPEG
            pos = end
            continue
        if marker in _SOF:
            if length < 8:
                raise BadImage("corrupt JPEG frame header")
            height, width = struct.unpack_from(">HH", data, pos + 5)
            sof = (width, height, data[pos + 9], marker in _PROGRESSIVE)
        elif marker == 0xE1 and data.startswith(b"Exif\0\0", pos + 4, end):
            orientation = _exif_orientation(data[pos + 10 : end])
        elif marker == 0xEE and length >= 14 and data.startswith(b"Adobe", pos + 4):
            adobe = data[pos + 15]
        elif marker == 0xDA:
            break
        elif marker == 0xD9:
            raise BadImage("JPEG ends before its image data")
        pos = end
    if sof is None:
        raise BadImage("JPEG has no frame header")
    last = data if tail is None else tail
    if last.rfind(b"\xff\xd9", max(0, len(last) - EOI_WINDOW)) < 0:
        raise BadImage("truncated JPEG (no EOI marker at the end)")
    width, height, components, progressive = sof
    if width == 0 or height == 0:
        raise BadImage(f"JPEG frame header says {width}x{height}")
    return JpegHeader(width, height, components, progressive, orientation, adobe)


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (0x0112) of IFD0, 1 when absent or unreadable."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    e = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(e + "I", tiff[4:8])
        (count,) = struct.unpack(e + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            off = ifd + 2 + 12 * i
            tag, typ = struct.unpack(e + "HH", tiff[off : off + 4])
            if tag == 0x0112 and typ == 3:
                (value,) = struct.unpack(e + "H", tiff[off + 8 : off + 10])
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def check_image(data: bytes, opts: CheckOptions, tail: bytes | None = None) -> Verdict:
    """Decide what to do with one input file (see the module docstring). With `tail` (fast checks only),
    `data` is the file's head and `tail` its last `EOI_WINDOW` bytes; see `parse_jpeg_header`."""
    if tail is not None and not opts.fast:
        raise ValueError("check_image: a full check needs the whole file, not its head and tail")
    if not data:
        return Verdict("quarantine", "empty file")
    if data.startswith(b"\xff\xd8"):
        try:
            head = parse_jpeg_header(data, tail)
        except BadImage as e:
            return Verdict("quarantine", str(e))
        reason = _jpeg_reencode_reason(head, opts)
        if not opts.fast:
            try:
                _full_decode_jpeg(data, head)
            except BadImage as e:
                return Verdict("quarantine", str(e))
        return Verdict("reencode" if reason else "copy", reason, head.width, head.height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            fmt = (img.format or "unknown").lower()
            img.load()
    except Exception as e:  # PIL raises many types for non-images and corrupt files
        kind = "not an image" if _looks_like_text(data) else "undecodable"
        return Verdict("quarantine", f"{kind} ({_describe(e)})")
    return Verdict("reencode", f"{fmt} file", img.width, img.height)


def _jpeg_reencode_reason(head: JpegHeader, opts: CheckOptions) -> str:
    if head.components == 4:
        return "cmyk"
    if head.components == 1:
        return "grayscale"
    if head.components != 3:
        return f"{head.components}-component JPEG"
    if head.orientation != 1:
        return f"exif orientation {head.orientation}"
    if head.progressive and opts.reencode_progressive:
        return "progressive"
    if opts.resize_shorter and min(head.width, head.height) > opts.resize_shorter:
        return f"resize shorter side to {opts.resize_shorter}"
    return ""


def _full_decode_jpeg(data: bytes, head: JpegHeader) -> None:
    if head.components == 3:
        try:
            simplejpeg.decode_jpeg(data, colorspace="rgb", strict=True)
            return
        except ValueError as e:
            raise BadImage(f"undecodable JPEG ({e})"[:200]) from None
    try:  # CMYK and grayscale: libjpeg via PIL; truncation raises
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as e:
        raise BadImage(f"undecodable JPEG ({_describe(e)})") from None


def _describe(e: Exception) -> str:
    """An exception as a short reason with no memory addresses, so the manifest is reproducible."""
    text = re.sub(r" (at|object at) 0x[0-9a-fA-F]+", "", f"{type(e).__name__}: {e}")
    return re.sub(r"<_io\.BytesIO[^>]*>", "the data", text)[:200]


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def reencode(data: bytes, opts: CheckOptions) -> bytes:
    """RGB baseline JPEG of `data`, upright (EXIF orientation applied), resized if asked; deterministic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = Image.open(io.BytesIO(data))
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
    if opts.resize_shorter and min(img.size) > opts.resize_shorter:
        w, h = img.size
        s = opts.resize_shorter / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=REENCODE_QUALITY, subsampling="4:2:0", optimize=False)
    return out.getvalue()


def prepare(data: bytes, verdict: Verdict, opts: CheckOptions) -> bytes:
    """The bytes to store for an image whose verdict is copy or reencode."""
    return reencode(data, opts) if verdict.action == "reencode" else data
