"""`tar_stream` lays members out in reused buffers and writes them on a helper thread: whatever the sizes
(members larger than a buffer, a batch size smaller than a header), files read straight into the buffer,
bytes a check swaps in, the bytes on disk must be exactly what `tarfile` writes, and an error anywhere must
stop the stream cleanly and leave the helper ready for the next one."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dist_vgg.data import tar_stream

pytestmark = pytest.mark.timeout(60)


class OnDisk(tar_stream.FileBytes):
    """A file's bytes, optionally replaced by `swap` when checked."""

    __slots__ = ("path", "swap")

    def __init__(self, path: Path, swap: bytes | None = None) -> None:
        super().__init__(path.stat().st_size)
        self.path, self.swap = path, swap

    def read_into(self, view: memoryview) -> None:
        with open(self.path, "rb") as f:
            assert f.readinto(view) == self.size

    def check(self, view: memoryview) -> bytes | None:
        return self.swap


def reference(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            tar.addfile(tar_stream._member(name, len(data)), io.BytesIO(data))
    return out.getvalue()


def stream(path: Path, members: list[tuple[str, bytes | tar_stream.FileBytes]]) -> tuple[list, int, str]:
    with open(path, "wb", buffering=0) as f, tar_stream.TarStream(f.fileno()) as s:
        placed = [s.add(name, data) for name, data in members]
        size, digest = s.finish()
    return placed, size, digest


@pytest.mark.parametrize("batch", [tar_stream.BATCH_BYTES, 100_000, 700])
def test_files_bytes_and_swapped_members_give_tarfiles_bytes(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(tar_stream, "BATCH_BYTES", batch)
    rng = np.random.default_rng(0)
    sizes = [0, 1, 511, 512, 513, 70_000, tar_stream.BUFFER_BYTES + 3, 2_500_000, 40]
    members: list[tuple[str, bytes | tar_stream.FileBytes]] = []
    expected: list[tuple[str, bytes]] = []
    for i, n in enumerate(sizes):
        data = rng.bytes(n)
        if i % 3 == 0:  # plain bytes
            members.append((f"s{i}.bin", data))
            expected.append((f"s{i}.bin", data))
        else:  # a file read into the buffer; every third of those swapped for other bytes by its check
            (tmp_path / f"{i}.in").write_bytes(data)
            swap = rng.bytes(n // 2 + 7) if i % 3 == 2 else None
            members.append((f"s{i}.jpg", OnDisk(tmp_path / f"{i}.in", swap)))
            expected.append((f"s{i}.jpg", data if swap is None else swap))
    placed, size, digest = stream(tmp_path / "out.tar", members)
    written = (tmp_path / "out.tar").read_bytes()
    assert written == reference(expected)
    assert (size, digest) == (len(written), hashlib.sha256(written).hexdigest())
    with tarfile.open(
        tmp_path / "out.tar"
    ) as tar:  # the offsets and sizes `add` returned are where tar sees them
        assert [(m.offset_data, m.size) for m in tar.getmembers()] == placed


def test_an_error_reading_or_checking_stops_the_stream_and_the_next_one_is_fine(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 5000)

    class Unreadable(OnDisk):
        __slots__ = ()

        def read_into(self, view: memoryview) -> None:
            raise OSError(5, "Input/output error")

    class Refused(OnDisk):
        __slots__ = ()

        def check(self, view: memoryview) -> bytes | None:
            raise ValueError("not an image")

    for bad, error in ((Unreadable(tmp_path / "a"), OSError), (Refused(tmp_path / "a"), ValueError)):
        with pytest.raises(error):
            stream(tmp_path / "bad.tar", [("one.bin", b"1" * 3000), ("two.jpg", bad)])
    fine = [("one.bin", b"1" * 3000), ("two.jpg", OnDisk(tmp_path / "a"))]
    _, _, digest = stream(tmp_path / "good.tar", fine)
    assert (tmp_path / "good.tar").read_bytes() == reference(
        [("one.bin", b"1" * 3000), ("two.jpg", b"x" * 5000)]
    )
    assert digest == hashlib.sha256((tmp_path / "good.tar").read_bytes()).hexdigest()


def test_the_buffers_are_reused_so_memory_stays_bounded(tmp_path):
    """Many streams and far more bytes than the pool holds: the pool never grows past BUFFER_COUNT."""
    data = os.urandom(300_000)
    for k in range(3):
        stream(tmp_path / f"{k}.tar", [(f"m{i}.bin", data) for i in range(40)])
    assert tar_stream._Helpers.get()._made <= tar_stream.BUFFER_COUNT
