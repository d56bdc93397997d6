"""A deterministic USTAR stream, written and hashed about as fast as `tar` copies the same files.

Why its own module: `format.write_shard` decides what goes into a shard (member names, the DALI index); this
module only turns members into tar bytes on disk. Three things make it fast in Python:

- **reused buffers**: members are laid out in a few large buffers that every stream of the process reuses.
  Reading 1.28 M images into fresh `bytes` costs more than reading them (new memory is page-faulted in on
  every allocation); an image given as `FileBytes` is read straight into its place in the buffer instead;
- **one `writev` and one hash update per buffer**, not per member;
- **a helper thread** hashing and writing each filled buffer in order while the caller fills the next (both
  release the GIL). A buffer returns to the pool when it is written, so memory stays bounded whatever the
  speeds. (Reading on another thread too was tried and is slower: the reads then wait for the GIL that the
  caller's thread holds while it lays out headers.)

Headers have fixed fields (mtime 0, uid/gid 0, empty owner names, mode 0644), built here byte for byte as
Python's `tarfile` writes them, so a stream's bytes depend only on its members.
"""

from __future__ import annotations

import hashlib
import os
import queue
import tarfile
import threading
from types import TracebackType

TAR_BLOCK = 512
BUFFER_BYTES = 1 << 20
"""Size of each reused buffer (one `writev` and one hash update each)."""
BUFFER_COUNT = 8
"""Buffers per process: one being filled, the others being written and hashed."""
BATCH_BYTES = BUFFER_BYTES
"""Bytes gathered before a hand-over to the helper threads (at most `BUFFER_BYTES`; tests lower it)."""


class FileBytes:
    """A member's bytes still on disk, read straight into the stream's buffer instead of through a fresh
    `bytes`: subclass it (one object per image, so kept to slots). `read_into` fills the whole view it is
    given (`size` bytes) or raises. `check` then sees the bytes there: it returns None to store them, other
    bytes to store instead (a re-encoded image), or raises to abandon the stream."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def read_into(self, view: memoryview) -> None:
        raise NotImplementedError

    def check(self, view: memoryview) -> bytes | None:
        return None


Data = bytes | bytearray | memoryview | FileBytes


class TarStream:
    """Writes tar members to the open file `fd` and hashes them (sha256); use as a context manager and call
    `finish()` at the end. An exception inside the `with` waits for the helper threads and propagates; the
    first error of a helper thread (a full disk) is raised by the next `add` or by `finish`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._hash = hashlib.sha256()
        self._helpers = _Helpers.get()
        self._error: BaseException | None = None
        self._closed = threading.Semaphore(0)
        self._open = True
        self._buf = self._helpers.take()
        self._mv = memoryview(self._buf)
        self._cap = max(1, min(BATCH_BYTES, len(self._buf)))
        self._used = self._start = self._batched = 0
        self._parts: list[bytes | bytearray | memoryview] = []
        self.offset = 0
        """Bytes of the stream so far (where the next member's header goes)."""

    def __enter__(self) -> TarStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open:
            self._close(raise_error=exc is None)

    def add(self, name: str, data: Data) -> tuple[int, int]:
        """Append one member; returns the offset of its data in the stream and its size (that of the bytes a
        `FileBytes` replaced itself with, if it did)."""
        if self._error is not None:
            raise self._error
        size = data.size if isinstance(data, FileBytes) else len(data)
        pad = -size % TAR_BLOCK
        total = TAR_BLOCK + size + pad
        if total > self._cap:
            return self._add_large(name, size, data)
        # The common case, in one buffer (once per member of every image: kept to a few operations)
        used = self._used
        if used + total > self._cap:
            self._flush()
            used = 0
        mv = self._mv
        if isinstance(data, FileBytes):  # the data first: the header needs the size actually stored
            view = mv[used + TAR_BLOCK : used + TAR_BLOCK + size]
            data.read_into(view)
            other = data.check(view)
            if other is not None:
                return self.add(name, other)
            mv[used : used + TAR_BLOCK] = _header(name, size)
            if pad:
                mv[used + TAR_BLOCK + size : used + total] = _ZEROS[:pad]
        elif size < TAR_BLOCK:  # labels, metadata: header, data and padding in one copy
            mv[used : used + total] = b"".join((_header(name, size), data, _ZEROS[:pad]))
        else:
            mv[used : used + TAR_BLOCK] = _header(name, size)
            mv[used + TAR_BLOCK : used + TAR_BLOCK + size] = data
            if pad:
                mv[used + TAR_BLOCK + size : used + total] = _ZEROS[:pad]
        self._used = used + total
        self._batched += total
        at = self.offset + TAR_BLOCK
        self.offset += total
        if self._batched >= self._cap:
            self._flush()
        return at, size

    def add_small(self, members: list[tuple[str, bytes]]) -> list[int]:
        """Append members of under 512 bytes each (labels, metadata) with one copy; returns the offset of
        each one's data. The same bytes as `add` for each, in order: it saves that call's work per member."""
        if self._error is not None:
            raise self._error
        pieces = []
        for name, data in members:
            size = len(data)
            if size >= TAR_BLOCK:
                raise ValueError(f"add_small: member {name} has {size} bytes; add it with `add`")
            pieces += (_header(name, size), data, _ZEROS[: TAR_BLOCK - size] if size else b"")
        total = 2 * TAR_BLOCK * len(members) - sum(1 for _, d in members if not d) * TAR_BLOCK
        if total > self._cap:
            return [self.add(name, data)[0] for name, data in members]
        used = self._used
        if used + total > self._cap:
            self._flush()
            used = 0
        self._mv[used : used + total] = b"".join(pieces)
        self._used = used + total
        self._batched += total
        offsets = []
        at = self.offset
        for _, data in members:
            offsets.append(at + TAR_BLOCK)
            at += 2 * TAR_BLOCK if data else TAR_BLOCK
        self.offset = at
        if self._batched >= self._cap:
            self._flush()
        return offsets

    def _add_large(self, name: str, size: int, data: Data) -> tuple[int, int]:
        """A member larger than a buffer: its data is handed over as it is, between the buffer's pieces."""
        if isinstance(data, FileBytes):
            own = memoryview(bytearray(size))
            data.read_into(own)
            other = data.check(own)
            if other is not None:
                return self.add(name, other)
            data = own
        self._append(_header(name, size))
        self._append(data)
        pad = -size % TAR_BLOCK
        if pad:
            self._append(_ZEROS[:pad])
        at = self.offset + TAR_BLOCK
        self.offset = at + size + pad
        if self._batched >= self._cap:
            self._flush()
        return at, size

    def finish(self) -> tuple[int, str]:
        """Write the end-of-archive marker and the padding to a whole tar record (as `tarfile` does), wait
        until everything is written; returns (stream size, sha256 hex digest)."""
        end = 2 * TAR_BLOCK
        end += -(self.offset + end) % tarfile.RECORDSIZE
        self._append(bytes(end))
        self.offset += end
        self._flush()
        self._close(raise_error=True)
        return self.offset, self._hash.hexdigest()

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if n <= self._cap:
            if self._used + n > self._cap:
                self._flush()
            self._mv[self._used : self._used + n] = data
            self._used += n
        else:  # larger than a buffer: handed over as it is, between the buffer's pieces
            self._cut()
            self._parts.append(data)
        self._batched += n

    def _cut(self) -> None:
        if self._used > self._start:
            self._parts.append(self._mv[self._start : self._used])
            self._start = self._used

    def _flush(self) -> None:
        self._cut()
        if not self._parts:
            return
        self._helpers.submit(self, (self._parts, self._buf))
        self._buf = self._helpers.take()  # waits while every buffer is still in use (back-pressure)
        self._mv = memoryview(self._buf)
        self._parts, self._used, self._start, self._batched = [], 0, 0, 0
        if self._error is not None:
            raise self._error

    def _close(self, raise_error: bool) -> None:
        self._open = False
        self._helpers.submit(self, None)
        self._closed.acquire()  # the helper has passed every batch of this stream
        self._parts = []
        self._helpers.give_back(self._buf)
        if raise_error and self._error is not None:
            raise self._error


class _Helpers:
    """This process's buffer pool and its helper thread (starting a thread per shard costs more than writing
    a small one). Made again in a forked child, since threads do not survive a fork."""

    _instance: _Helpers | None = None
    _pid = 0
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Helpers:
        with cls._lock:
            if cls._instance is None or cls._pid != os.getpid():
                cls._instance, cls._pid = cls(), os.getpid()
            return cls._instance

    def __init__(self) -> None:
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._made = 0
        self._queue: queue.Queue[tuple[TarStream, tuple[list, bytearray] | None]] = queue.Queue()
        threading.Thread(target=self._serve, name="tar-stream", daemon=True).start()

    def take(self) -> bytearray:
        """A free buffer; allocated on first need, up to `BUFFER_COUNT` (then waits for one to come back)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < BUFFER_COUNT:
                self._made += 1
                return bytearray(BUFFER_BYTES)
        return self._free.get()

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def submit(self, stream: TarStream, batch: tuple[list, bytearray] | None) -> None:
        """Queue `batch` (its pieces and their buffer; None: the stream's end)."""
        self._queue.put((stream, batch))

    def _serve(self) -> None:
        while True:
            stream, batch = self._queue.get()
            if batch is None:
                stream._closed.release()
                continue
            parts, buffer = batch
            try:
                if stream._error is None:
                    for (
                        part
                    ) in parts:  # hashed first: the write then copies bytes already in this core's cache
                        stream._hash.update(part)
                    _write_all(stream._fd, parts)
            except BaseException as e:  # reported to the stream's caller; the thread serves the next batch
                stream._error = stream._error or e
            finally:
                parts.clear()  # drop the views before the buffer is reused
                self.give_back(buffer)


def _write_all(fd: int, parts: list) -> None:
    total = sum(len(p) for p in parts)
    done = os.writev(fd, parts)
    if done < total:  # a short write (a signal, a nearly full disk): finish piece by piece
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


_ZEROS = bytes(TAR_BLOCK)
_HEAD_FIXED = bytearray(TAR_BLOCK)
_HEAD_FIXED[100:124] = b"0000644\x000000000\x000000000\x00"
_HEAD_FIXED[136:156] = b"00000000000\x00        "
_HEAD_FIXED[156] = ord(tarfile.REGTYPE)
_HEAD_FIXED[257:265] = b"ustar\x0000"
_HEAD_SUM = sum(_HEAD_FIXED)
"""The header fields every member shares (mode, ids, mtime, type, magic; the checksum field as spaces)."""
_HEAD_MODE_IDS = bytes(_HEAD_FIXED[100:124])
_HEAD_MTIME = bytes(_HEAD_FIXED[136:148])
_HEAD_REST = bytes(_HEAD_FIXED[155:])


def _header(name: str, size: int) -> bytes:
    """The USTAR header `tarfile` (Python ≥ 3.11: empty device numbers for regular files) writes for
    `_member(name, size)`, built directly: tarfile's is slow, and this way the bytes do not depend on the
    Python version of whoever writes the stream. The checksum is the shared fields' sum plus name and size."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    if not raw or len(raw) > 100 or size >= _MAX_OCTAL_SIZE:
        return _member(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\x00" % size
    checksum = b"%06o\x00" % (_HEAD_SUM + sum(raw) + sum(size_field))
    return b"".join(
        (raw, _ZEROS[: 100 - len(raw)], _HEAD_MODE_IDS, size_field, _HEAD_MTIME, checksum, _HEAD_REST)
    )


_MAX_OCTAL_SIZE = 8**11
