"""Snapshots: the pages of a session's memory that differ from the start image.

A fresh instance already holds the start image, so a snapshot only needs the pages a
session changed (QuickJS's initialised heap, about half a megabyte, is mostly left
alone). A snapshot is::

    magic | u32 header length | header (JSON) | payload | MAC (32 bytes, if signed)

The header names the format, the guest build, the bindings, the memory size and
whether the snapshot is signed. Signed snapshots (a Sandbox given a ``snapshot_key``)
end with an HMAC-SHA256 of everything before it, checked before anything else of the
snapshot is looked at. The payload is::

    u32 part count | (u32 compressed length, u32 raw length) * count | the parts

the parts (at most two, each compressed with zlib level 1 on its own thread: zlib
releases the GIL) joined making::

    u32 page count | u32 page index * count (ascending) | the pages, in that order

with little-endian integers and 4 KiB pages counted from the end of the C stack.

Restoring never trusts a size it reads: the header's memory size must fit the
restoring Sandbox's memory limit, the raw sizes must fit that memory, and zlib output
is taken in bounded chunks, so a crafted snapshot (a zlib bomb, say) costs at most
what a legitimate snapshot of that memory would.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import hmac
import json
import struct
import threading
import zlib
from typing import Any

from ._errors import ConfigError, SnapshotError

MAGIC = b"CLAMBOT-SNAPSHOT\n"
#: 4: part sizes in the part table, ascending page indices, and the optional MAC
VERSION = 4

PAGE = 4096
#: a wasm memory grows in 64 KiB pages, so every snapshot's memory size is a multiple
WASM_PAGE = 65536
MAC_BYTES = 32
_MAC_NAME = "hmac-sha256"
#: shortest snapshot key accepted: a shorter one is guessable
MIN_KEY_BYTES = 16
#: a header names a build, a few bindings and two numbers; a longer one is not ours
_MAX_HEADER = 64 * 1024
_MAX_PARTS = 2
#: below this, one part on the calling thread is faster than a hand-off
_SPLIT_ABOVE = 256 * 1024
#: zlib input fed, and output taken, per step (bounds what a bomb can allocate)
_IN_STEP = 256 * 1024
_OUT_STEP = 1 << 20
_pool: cf.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def check_key(key: Any) -> bytes | None:
    """`key` (bytes, or a str taken as UTF-8) as the bytes of an HMAC key, or None.

    Raises ConfigError if it is of another type or shorter than MIN_KEY_BYTES.
    """
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise ConfigError("snapshot_key must be bytes (or a str, taken as UTF-8)")
    out = bytes(key)
    if len(out) < MIN_KEY_BYTES:
        raise ConfigError(
            f"snapshot_key must be at least {MIN_KEY_BYTES} bytes (32 random bytes are "
            "best: os.urandom(32))"
        )
    return out


def local_snapshot_key() -> bytes:
    """A snapshot key for this user on this machine: derived from a random secret kept
    in a 0600 file in the private cache directory (made on first use), so every process
    of this user here gets the same key. Snapshots signed with it restore only here
    (and no longer once the cache directory is deleted).

    Raises ConfigError if no private cache directory is available.
    """
    from ._engine import cache_dir, local_secret

    directory = cache_dir()
    key = local_secret(directory, b"snapshot") if directory is not None else None
    if key is None:
        raise ConfigError(
            "no private cache directory to keep a local snapshot key in: pass a key, or "
            "set CLAMBOT_CACHE_DIR to a directory only this user can write"
        )
    return key


def _map(fn: Any, items: list[Any]) -> list[Any]:
    global _pool
    if len(items) == 1:
        return [fn(items[0])]
    with _pool_lock:
        if _pool is None:
            _pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="clambot-zlib")
    return list(_pool.map(fn, items))


def _compress(data: bytes | bytearray) -> bytes:
    return zlib.compress(data, 1)


def _pack(raw: bytes | bytearray) -> bytes:
    n = len(raw)
    parts = [raw] if n <= _SPLIT_ABOVE else [raw[: n // 2], raw[n // 2 :]]
    packed = _map(_compress, parts)
    head = len(packed).to_bytes(4, "little") + b"".join(
        len(p).to_bytes(4, "little") + len(r).to_bytes(4, "little")
        for p, r in zip(packed, parts, strict=True)
    )
    return head + b"".join(packed)


def _inflate(job: tuple[memoryview, memoryview]) -> None:
    """Decompress the zlib stream `src` into exactly `dst`, taking output in bounded
    steps. Raises ValueError if the stream is damaged or its output is not dst's size."""
    src, dst = job
    d = zlib.decompressobj()
    pos = 0
    try:
        for start in range(0, len(src), _IN_STEP):
            data: bytes | memoryview = src[start : start + _IN_STEP]
            while True:
                out = d.decompress(data, _OUT_STEP)
                if len(out) > len(dst) - pos:
                    raise ValueError("damaged: a part is larger than its stated size")
                dst[pos : pos + len(out)] = out
                pos += len(out)
                data = d.unconsumed_tail
                # output below the step: zlib stopped for want of input, nothing pending
                if not data and len(out) < _OUT_STEP:
                    break
    except zlib.error as exc:
        raise ValueError(f"damaged: {exc}") from None
    if not d.eof or d.unused_data or pos != len(dst):
        raise ValueError("damaged: a part is cut short or has trailing bytes")


def _unpack(payload: memoryview, max_raw: int) -> bytearray:
    """The raw bytes of `payload` (made by `_pack`). Raises ValueError if it is damaged
    or would be larger than `max_raw`, before allocating anything of that size."""
    if len(payload) < 4:
        raise ValueError("damaged: too short")
    count = int.from_bytes(payload[:4], "little")
    table = 4 + 8 * count
    if not 1 <= count <= _MAX_PARTS or len(payload) < table:
        raise ValueError("damaged: bad part table")
    sizes = [
        (
            int.from_bytes(payload[4 + 8 * k : 8 + 8 * k], "little"),
            int.from_bytes(payload[8 + 8 * k : 12 + 8 * k], "little"),
        )
        for k in range(count)
    ]
    if table + sum(c for c, _ in sizes) != len(payload):
        raise ValueError("damaged: parts do not add up")
    total = sum(r for _, r in sizes)
    if total > max_raw:
        raise ValueError("damaged: larger than the memory it restores")
    raw = bytearray(total)
    out = memoryview(raw)
    jobs, pos, at = [], table, 0
    for c, r in sizes:
        jobs.append((payload[pos : pos + c], out[at : at + r]))
        pos += c
        at += r
    _map(_inflate, jobs)
    return raw


def raw_limit(length: int) -> int:
    """The most raw bytes a snapshot of a memory of `length` bytes can hold: every page
    changed, each with its index."""
    return 4 + ((length + PAGE - 1) // PAGE) * (4 + PAGE)


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


def decode(payload: bytes | memoryview, length: int) -> list[tuple[int, memoryview]]:
    """The changed regions (offset, bytes), merged where pages are adjacent, of a memory
    of `length` bytes. Never holds more than `raw_limit(length)` bytes of output.

    Raises ValueError if the payload is damaged or does not fit.
    """
    raw = memoryview(_unpack(memoryview(payload), raw_limit(length)))
    if len(raw) < 4:
        raise ValueError("damaged: too short")
    count = int.from_bytes(raw[:4], "little")
    body = 4 + 4 * count
    if count > (length + PAGE - 1) // PAGE or len(raw) < body:
        raise ValueError("damaged: bad page index")
    regions: list[tuple[int, memoryview]] = []
    pos = start = body
    first = prev = -1
    for i in struct.unpack_from(f"<{count}I", raw, 4):
        lo = i * PAGE
        size = min(PAGE, length - lo)
        if i <= prev or size <= 0 or pos + size > len(raw):
            raise ValueError("damaged: a page is out of order or outside the memory")
        if i != prev + 1 and pos > start:  # a gap: the region so far is complete
            regions.append((first * PAGE, raw[start:pos]))
            start = pos
        if pos == start:
            first = i
        pos += size
        prev = i
    if pos > start:
        regions.append((first * PAGE, raw[start:pos]))
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
    key: bytes | None = None,
) -> bytes:
    """A whole snapshot: magic, header (format, guest build, bindings, memory size,
    signature), the payload of `encode`, and with a `key` its HMAC-SHA256."""
    header = json.dumps(
        {
            "format": VERSION,
            "guest_sha256": guest_sha256,
            "bindings": bindings,
            "memory_bytes": memory_bytes,
            "mac": _MAC_NAME if key is not None else None,
        }
    ).encode()
    body = MAGIC + len(header).to_bytes(4, "little") + header + encode(memory, base)
    if key is None:
        return body
    return body + hmac.digest(key, body, hashlib.sha256)


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header of a snapshot and where its payload starts.

    Raises SnapshotError if the bytes are not a snapshot or the header is damaged.
    """
    m = len(MAGIC)
    if data[:m] != MAGIC or len(data) < m + 4:
        raise SnapshotError("these bytes are not a ClamBot snapshot")
    hlen = int.from_bytes(data[m : m + 4], "little")
    if hlen > _MAX_HEADER or m + 4 + hlen > len(data):
        raise SnapshotError("the snapshot's header is damaged")
    try:
        header = json.loads(data[m + 4 : m + 4 + hlen])
    except (ValueError, RecursionError, MemoryError):  # bad JSON, UTF-8, nesting
        raise SnapshotError("the snapshot's header is damaged") from None
    if not isinstance(header, dict):
        raise SnapshotError("the snapshot's header is damaged")
    return header, m + 4 + hlen


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shown(value: Any, limit: int = 200) -> str:
    """`value` for an error message, cut to `limit` characters (a header is untrusted)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unpack(
    data: Any,
    *,
    guest_sha256: str,
    bindings: list[str],
    skip: int,
    max_memory_bytes: int,
    key: bytes | None = None,
) -> tuple[int, list[tuple[int, memoryview]]]:
    """(memory size, changed regions above `skip`) of a snapshot made by `pack` for
    this guest build and these bindings, signed with `key` if one is given (and not
    signed if none is), for a memory of at most `max_memory_bytes`.

    Raises SnapshotError for anything else, within memory bounded by
    `max_memory_bytes`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError("a snapshot is bytes")
    data = bytes(data)  # immutable from here on: what is checked is what is loaded
    header, start = _header(data)
    fmt = header.get("format")
    if fmt != VERSION or not _is_int(fmt):
        shown = fmt if _is_int(fmt) else "unknown"
        raise SnapshotError(
            f"snapshot format {shown} is not supported (this version reads {VERSION})"
        )
    guest, names, size = (
        header.get("guest_sha256"),
        header.get("bindings"),
        header.get("memory_bytes"),
    )
    if (
        not isinstance(guest, str)
        or not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or not isinstance(size, int)
        or isinstance(size, bool)
    ):
        raise SnapshotError("the snapshot's header is damaged")
    if guest != guest_sha256:
        raise SnapshotError(
            "the snapshot was made by another build of the guest "
            f"({guest[:12]}, this one is {guest_sha256[:12]}); it cannot be loaded"
        )
    if names != bindings:
        raise SnapshotError(
            f"the snapshot was made with the bindings {_shown(names)}; this sandbox grants "
            f"{bindings}"
        )
    end = len(data)
    signed = header.get("mac") == _MAC_NAME
    if header.get("mac") not in (None, _MAC_NAME):
        raise SnapshotError("the snapshot's header is damaged")
    if key is None and signed:
        raise SnapshotError(
            "the snapshot is signed (HMAC-SHA256) and this Sandbox has no snapshot_key: "
            "restore it with a Sandbox given the key it was made with"
        )
    if key is not None and not signed:
        raise SnapshotError(
            "the snapshot is not signed, and this Sandbox (given a snapshot_key) only "
            "restores snapshots signed with its key"
        )
    if key is not None:
        end -= MAC_BYTES
        if end < start or not hmac.compare_digest(
            data[end:], hmac.digest(key, memoryview(data)[:end], hashlib.sha256)
        ):
            raise SnapshotError(
                "the snapshot's signature does not match this Sandbox's snapshot_key: it "
                "was made with another key (every process that restores a snapshot needs "
                "the key it was made with), or changed since"
            )
    if size < skip or size % WASM_PAGE:
        raise SnapshotError("the snapshot's header is damaged (memory size)")
    if size > max_memory_bytes:
        raise SnapshotError(
            f"the snapshot's memory ({size >> 20} MiB) is more than this Sandbox's limits "
            f"allow ({max_memory_bytes >> 20} MiB): restore it with a larger memory_mb"
        )
    try:
        return size, decode(memoryview(data)[start:end], size - skip)
    except ValueError as exc:
        raise SnapshotError(f"the snapshot's data is {exc}") from None
