"""The `--fast` check reads only a file's head and tail, and the shard writer streams through helper threads:
neither may change a verdict or a byte. Real JPEG files built with PIL, checked through the same functions
`data_prep imagenet --fast` calls."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from data_prep import imagenet, images, sources
from dist_vgg.data import format as fmt
from dist_vgg.data import tar_stream

pytestmark = pytest.mark.timeout(60)


def jpeg(size=(64, 48), mode="RGB", orientation: int | None = None, icc_bytes: int = 0, **save) -> bytes:
    """A real JPEG; `icc_bytes` of ICC profile (APP2 segments) make its header longer than the fast head."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    if icc_bytes:
        save["icc_profile"] = bytes(rng.integers(0, 255, icc_bytes, np.uint8))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90, **save)
    return out.getvalue()


def item(tmp_path, name: str, data: bytes) -> sources.Item:
    path = tmp_path / name
    path.write_bytes(data)
    return sources.Item("train", "n00000001", f"n00000001/{name}", str(path), 0, len(data))


def header_end(data: bytes) -> int:
    """Byte offset of the SOS marker (where the header walk stops)."""
    pos = 2
    while data[pos + 1] != 0xDA:
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return pos


@pytest.mark.parametrize(
    "name, data",
    [
        ("plain", jpeg()),
        ("rotated", jpeg(orientation=6)),
        ("rotated_long_header", jpeg(orientation=8, icc_bytes=3 * imagenet.FAST_HEAD)),
        ("long_header", jpeg(size=(400, 300), icc_bytes=2 * imagenet.FAST_HEAD)),
        ("progressive", jpeg(size=(400, 300), progressive=True)),
        ("grayscale", jpeg(size=(400, 300), mode="L")),
        ("cmyk", jpeg(size=(400, 300), mode="CMYK")),
    ],
)
def test_fast_verdict_equals_the_whole_file_header_check(tmp_path, name, data):
    """Head + tail (one open) or a fallback to the whole file: always the verdict of the whole file."""
    opts = images.CheckOptions(fast=True, reencode_progressive=True)
    if name.endswith("long_header"):
        assert header_end(data) > imagenet.FAST_HEAD and len(data) > imagenet.FAST_HEAD + images.EOI_WINDOW
    whole = images.check_image(data, opts)
    assert imagenet._fast_verdict(item(tmp_path, f"{name}.JPEG", data), opts) == whole
    assert whole.action == ("copy" if name in ("plain", "long_header") else "reencode")
    if "rotated" in name:
        assert whole.reason.startswith("exif orientation")


def test_fast_check_quarantines_a_truncated_large_jpeg_and_a_header_cut_at_the_head(tmp_path):
    data = jpeg(size=(600, 400), icc_bytes=2 * imagenet.FAST_HEAD)
    opts = images.CheckOptions(fast=True)
    cut = data[: len(data) - 3000]  # no EOI in the last 4 KB
    assert imagenet._fast_verdict(item(tmp_path, "cut.JPEG", cut), opts).reason == (
        "truncated JPEG (no EOI marker at the end)"
    )
    head_only = data[: imagenet.FAST_HEAD + 5000]  # ends inside the ICC profile, before any frame header
    verdict = imagenet._fast_verdict(item(tmp_path, "head.JPEG", head_only), opts)
    assert verdict.action == "quarantine" and verdict.reason == "truncated JPEG header segment"
    # the head alone never passes for the whole file: the walk stops at the head's end
    with pytest.raises(images.BadImage, match="truncated JPEG header"):
        images.parse_jpeg_header(data[: imagenet.FAST_HEAD], data[-images.EOI_WINDOW :])


def test_streamed_shard_from_a_generator_is_identical_and_hashed(tmp_path):
    """Many write batches (small BATCH_BYTES: most members larger than a batch): the same bytes, index and
    sha256 as one batch."""
    rng = np.random.default_rng(1)
    samples = [
        fmt.Sample(
            fmt.sample_key("train", i), rng.bytes(int(n)), i % 5, {"wnid": "n00000001", "source": f"x/{i}"}
        )
        for i, n in enumerate(rng.integers(1, 40_000, 60))
    ]
    one = fmt.write_shard(tmp_path / "a" / "train-000000.tar", samples, fsync=False)
    old = tar_stream.BATCH_BYTES
    tar_stream.BATCH_BYTES = 1000
    try:
        many = fmt.write_shard(tmp_path / "b" / "train-000000.tar", (s for s in samples), fsync=False)
    finally:
        tar_stream.BATCH_BYTES = old
    assert one.path.read_bytes() == many.path.read_bytes()
    assert (one.sha256, one.bytes, one.samples) == (many.sha256, many.bytes, 60)
    assert many.sha256 == hashlib.sha256(many.path.read_bytes()).hexdigest()
    assert one.path.with_suffix(".idx").read_text() == many.path.with_suffix(".idx").read_text()


def test_a_failing_shard_write_raises_and_the_next_shard_is_fine(tmp_path, monkeypatch):
    """An error on the writing thread (a full disk) reaches the caller; the helper threads keep serving."""
    samples = [fmt.Sample(fmt.sample_key("train", i), os.urandom(3000), 1, {"i": i}) for i in range(8)]

    def full_disk(fd, batch):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tar_stream, "_write_all", full_disk)
    with pytest.raises(OSError, match="No space left"):
        fmt.write_shard(tmp_path / "x" / "train-000000.tar", samples, fsync=False)
    assert list((tmp_path / "x").iterdir()) == []  # no shard, no index, no temporary file
    monkeypatch.undo()
    ok = fmt.write_shard(tmp_path / "y" / "train-000000.tar", samples, fsync=False)
    assert ok.sha256 == hashlib.sha256(ok.path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "meta",
    [
        {"wnid": "n01440764", "width": 500, "height": 375, "source": "n01440764/n01440764_10026.JPEG"},
        {"source": 'n0/é "q" \\ \n\t.JPEG', "reencoded": "cmyk", "width": 0, "height": -1, "wnid": ""},
        {"a": 1.5, "b": None, "c": [1, "x"], "d": True, "e": {"z": 1, "y": 2}},
        {},
    ],
)
def test_metadata_is_encoded_as_json_dumps_writes_it(meta):
    assert fmt.encode_meta(meta) == json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
