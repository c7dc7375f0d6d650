"""Snapshot payloads: the pages of a session's memory that differ from the start image.

A fresh instance already holds the start image, so a snapshot only needs the pages a
session changed (QuickJS's initialised heap, about half a megabyte, is mostly left
alone). The payload is zlib (level 1) of::

    u32 page count | u32 page index * count | the pages, in that order

with little-endian integers and 4 KiB pages counted from the end of the C stack.
"""

from __future__ import annotations

import zlib

PAGE = 4096


def encode(memory: bytes, base: bytes) -> bytes:
    """Compress the pages of `memory` that are not the same as in `base`."""
    indices: list[int] = []
    pages: list[bytes] = []
    mv, bv = memoryview(memory), memoryview(base)
    for i in range((len(memory) + PAGE - 1) // PAGE):
        lo = i * PAGE
        page = mv[lo:lo + PAGE]
        if lo + len(page) <= len(base) and page == bv[lo:lo + len(page)]:
            continue
        indices.append(i)
        pages.append(bytes(page))
    head = len(indices).to_bytes(4, "little") + b"".join(i.to_bytes(4, "little") for i in indices)
    return zlib.compress(head + b"".join(pages), 1)


def decode(payload: bytes, length: int) -> list[tuple[int, bytes]]:
    """The changed regions (offset, bytes), merged where pages are adjacent, of a memory
    of `length` bytes. Raises ValueError if the payload is damaged or does not fit."""
    try:
        raw = zlib.decompress(payload)
    except zlib.error as exc:
        raise ValueError(f"damaged: {exc}") from None
    if len(raw) < 4:
        raise ValueError("damaged: too short")
    count = int.from_bytes(raw[:4], "little")
    body = 4 + 4 * count
    if len(raw) < body:
        raise ValueError("damaged: truncated index")
    indices = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "little") for k in range(count)]
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
        chunk.append(raw[pos:pos + size])
        pos += size
        prev = i
    if chunk:
        regions.append((start, b"".join(chunk)))
    if pos != len(raw):
        raise ValueError("damaged: trailing bytes")
    return regions
