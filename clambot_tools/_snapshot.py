"""Snapshot payloads: the pages of a session's memory that differ from the start image.

A fresh instance already holds the start image, so a snapshot only needs the pages a
session changed (QuickJS's initialised heap, about half a megabyte, is mostly left
alone). The data is::

    u32 page count | u32 page index * count | the pages, in that order

with little-endian integers and 4 KiB pages counted from the end of the C stack. It is
cut into up to two parts, each compressed with zlib (level 1) on its own thread (zlib
releases the GIL), and stored as ``u32 part count | u32 compressed length * count |
the parts``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import zlib
from typing import Any

from ._errors import SnapshotError

MAGIC = b"CLAMBOT-SNAPSHOT\n"
VERSION = 3

PAGE = 4096
#: below this, one part on the calling thread is faster than a hand-off
_SPLIT_ABOVE = 256 * 1024
_pool: cf.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _map(fn: object, parts: list[Any]) -> list[bytes]:
    global _pool
    if len(parts) == 1:
        return [fn(parts[0])]  # type: ignore[operator]
    with _pool_lock:
        if _pool is None:
            _pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="clambot-zlib")
    return list(_pool.map(fn, parts))  # type: ignore[arg-type]


def _compress(data: bytes | bytearray) -> bytes:
    return zlib.compress(data, 1)


def _pack(raw: bytes | bytearray) -> bytes:
    parts = [raw] if len(raw) <= _SPLIT_ABOVE else [raw[: len(raw) // 2], raw[len(raw) // 2 :]]
    packed = _map(_compress, parts)
    head = len(packed).to_bytes(4, "little") + b"".join(
        len(p).to_bytes(4, "little") for p in packed
    )
    return head + b"".join(packed)


def _unpack(payload: bytes) -> bytes:
    if len(payload) < 4:
        raise ValueError("damaged: too short")
    count = int.from_bytes(payload[:4], "little")
    if not 1 <= count <= 16 or len(payload) < 4 + 4 * count:
        raise ValueError("damaged: bad part table")
    sizes = [int.from_bytes(payload[4 + 4 * k : 8 + 4 * k], "little") for k in range(count)]
    parts, pos = [], 4 + 4 * count
    for n in sizes:
        parts.append(payload[pos : pos + n])
        pos += n
    if pos != len(payload):
        raise ValueError("damaged: parts do not add up")
    try:
        return b"".join(_map(zlib.decompress, parts))
    except zlib.error as exc:
        raise ValueError(f"damaged: {exc}") from None


def encode(memory: bytes | memoryview, base: bytes) -> bytes:
    """Compress the pages of `memory` that are not the same as in `base`."""
    indices: list[int] = []
    pages = bytearray()
    mv, bv = memoryview(memory), memoryview(base)
    n = len(mv)
    for i in range((n + PAGE - 1) // PAGE):
        lo = i * PAGE
        page = mv[lo : lo + PAGE]
        if lo + len(page) <= len(base) and page == bv[lo : lo + len(page)]:
            continue
        indices.append(i)
        pages += page
    head = len(indices).to_bytes(4, "little") + b"".join(i.to_bytes(4, "little") for i in indices)
    return _pack(head + pages)


def decode(payload: bytes, length: int) -> list[tuple[int, bytes]]:
    """The changed regions (offset, bytes), merged where pages are adjacent, of a memory
    of `length` bytes. Raises ValueError if the payload is damaged or does not fit."""
    raw = _unpack(payload)
    if len(raw) < 4:
        raise ValueError("damaged: too short")
    count = int.from_bytes(raw[:4], "little")
    body = 4 + 4 * count
    if len(raw) < body:
        raise ValueError("damaged: truncated index")
    indices = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "little") for k in range(count)]
    regions: list[tuple[int, bytes]] = []
    pos = body
    start = -1
    chunk: list[bytes] = []
    prev = -2
    for i in indices:
        lo = i * PAGE
        size = min(PAGE, length - lo)
        if size <= 0 or pos + size > len(raw):
            raise ValueError("damaged: a page lies outside the memory")
        if i != prev + 1 and chunk:
            regions.append((start, b"".join(chunk)))
            chunk = []
        if not chunk:
            start = lo
        chunk.append(raw[pos : pos + size])
        pos += size
        prev = i
    if chunk:
        regions.append((start, b"".join(chunk)))
    if pos != len(raw):
        raise ValueError("damaged: trailing bytes")
    return regions


def pack(
    memory: memoryview,
    base: bytes,
    *,
    guest_sha256: str,
    bindings: list[str],
    memory_bytes: int,
) -> bytes:
    """A whole snapshot: magic, header (format, guest build, bindings, memory size)
    and the payload of `encode`."""
    header = json.dumps(
        {
            "format": VERSION,
            "guest_sha256": guest_sha256,
            "bindings": bindings,
            "memory_bytes": memory_bytes,
        }
    ).encode()
    return MAGIC + len(header).to_bytes(4, "little") + header + encode(memory, base)


def unpack(
    data: Any, *, guest_sha256: str, bindings: list[str], skip: int
) -> tuple[int, list[tuple[int, bytes]]]:
    """(memory size, changed regions above `skip`) of a snapshot made by `pack` for
    this guest build and these bindings.

    Raises SnapshotError for anything else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError("a snapshot is bytes")
    data = bytes(data)
    m = len(MAGIC)
    if data[:m] != MAGIC or len(data) < m + 4:
        raise SnapshotError("these bytes are not a ClamBot snapshot")
    hlen = int.from_bytes(data[m : m + 4], "little")
    try:
        header = json.loads(data[m + 4 : m + 4 + hlen])
        fmt, guest, names = header["format"], header["guest_sha256"], header["bindings"]
        size = int(header["memory_bytes"])
    except (ValueError, KeyError, TypeError):
        raise SnapshotError("the snapshot's header is damaged") from None
    if fmt != VERSION:
        raise SnapshotError(
            f"snapshot format {fmt} is not supported (this version reads {VERSION})"
        )
    if guest != guest_sha256:
        raise SnapshotError(
            "the snapshot was made by another build of the guest "
            f"({str(guest)[:12]}, this one is {guest_sha256[:12]}); it cannot be loaded"
        )
    if names != bindings:
        raise SnapshotError(
            f"the snapshot was made with the bindings {names}; this sandbox grants {bindings}"
        )
    try:
        return size, decode(data[m + 4 + hlen :], size - skip)
    except ValueError as exc:
        raise SnapshotError(f"the snapshot's data is {exc}") from None
