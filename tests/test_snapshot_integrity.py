"""Snapshots from a store are untrusted: signed ones (``Sandbox(snapshot_key=...)``) are
refused unless their MAC is right, and every malformed blob, signed or not, ends as a
SnapshotError within memory bounded by the restoring Sandbox's limits."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import ConfigError, Limits, Sandbox, SnapshotError, local_snapshot_key

MAGIC = b"CLAMBOT-SNAPSHOT\n"
KEY = b"k" * 32
LIMITS = Limits(timeout_s=2, memory_mb=32)


@pytest.fixture(scope="module")
def signed() -> Sandbox:
    return Sandbox(limits=LIMITS, snapshot_key=KEY)


@pytest.fixture(scope="module")
def keyless() -> Sandbox:
    return Sandbox(limits=LIMITS)


def snapshot_of(sb: Sandbox, code: str = "let x = 41") -> bytes:
    with sb.session() as s:
        assert s.run(code).ok
        return s.snapshot()


def split(snap: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, everything after it) of a snapshot."""
    m = len(MAGIC)
    hlen = int.from_bytes(snap[m : m + 4], "little")
    return json.loads(snap[m + 4 : m + 4 + hlen]), snap[m + 4 + hlen :]


def with_header(snap: bytes, header: bytes) -> bytes:
    """`snap` with its header bytes replaced by `header` (the rest kept as it is)."""
    return MAGIC + len(header).to_bytes(4, "little") + header + split(snap)[1]


def sign(body: bytes, key: bytes = KEY) -> bytes:
    """What an attacker holding `key` would append."""
    return body + hmac.digest(key, body, hashlib.sha256)


def assert_refused(sb: Sandbox, blob: bytes, match: str = "") -> SnapshotError:
    with pytest.raises(SnapshotError, match=match) as info:
        sb.restore(blob).close()
    return info.value


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak Python memory allocated while `fn` runs (zlib output and buffers included)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- keyed integrity


def test_signed_snapshot_restores_with_its_key(signed: Sandbox) -> None:
    snap = snapshot_of(signed, "let cart = ['A1']; const n = () => cart.length")
    header, _ = split(snap)
    assert header["format"] == 4 and header["mac"] == "hmac-sha256"
    assert hmac.compare_digest(snap[-32:], hmac.digest(KEY, snap[:-32], hashlib.sha256))
    with signed.restore(snap) as s:
        assert s.run("[cart[0], n(), 1 + 1]").value == ["A1", 1, 2]
    again = Sandbox(limits=LIMITS, snapshot_key=KEY.decode())  # a str key is its UTF-8
    with again.restore(snap) as s:
        assert s.run("n()").value == 1


def test_keyless_and_keyed_sandboxes_refuse_each_others_snapshots(
    signed: Sandbox, keyless: Sandbox
) -> None:
    assert_refused(keyless, snapshot_of(signed), "signed .* has no snapshot_key")
    assert_refused(signed, snapshot_of(keyless), "not signed")


def test_a_snapshot_signed_with_another_key_is_refused(signed: Sandbox) -> None:
    other = Sandbox(limits=LIMITS, snapshot_key=b"another key, 32 bytes long......")
    assert_refused(signed, snapshot_of(other), "does not match this Sandbox's snapshot_key")


def test_an_edited_snapshot_with_a_recomputed_checksum_is_refused(signed: Sandbox) -> None:
    """Flipping the header to "unsigned", or re-signing with a guessed key, both fail."""
    snap = snapshot_of(signed)
    header, _ = split(snap)
    unsigned = with_header(snap[:-32], json.dumps({**header, "mac": None}).encode())
    assert_refused(signed, unsigned, "not signed")
    resigned = sign(snap[:-32], hashlib.sha256(b"guess").digest())
    assert_refused(signed, resigned, "made with another key")
    assert_refused(signed, snap[:-32], "does not match")  # the MAC cut off


def test_snapshot_key_must_be_bytes_of_some_length() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        Sandbox(snapshot_key=b"short")
    with pytest.raises(ConfigError, match="must be bytes"):
        Sandbox(snapshot_key=12345)  # type: ignore[arg-type]


# -- every single-bit flip


def flips(snap: bytes, head: int) -> list[bytes]:
    """Every bit of the first `head` bytes (magic, header, part table) flipped, then
    one bit of every byte after them (the bit moves with the position)."""
    out = []
    for i in range(head * 8):
        b = bytearray(snap)
        b[i // 8] ^= 1 << (i % 8)
        out.append(bytes(b))
    for i in range(head, len(snap)):
        b = bytearray(snap)
        b[i] ^= 1 << (i % 8)
        out.append(bytes(b))
    return out


def test_every_bit_flip_of_a_signed_snapshot_is_refused(signed: Sandbox) -> None:
    snap = snapshot_of(signed)
    head = len(snap) - len(split(snap)[1]) + 20
    accepted = []
    for i, blob in enumerate(flips(snap, head)):
        try:
            signed.restore(blob).close()
        except SnapshotError:
            continue
        accepted.append(i)
    assert accepted == []


def test_bit_flips_of_an_unsigned_snapshot_are_refused_or_harmless(keyless: Sandbox) -> None:
    """Without a key some flips cannot be told apart (deflate has bits that change
    nothing): each one is refused, or restores a session that still runs."""
    snap = snapshot_of(keyless)
    head = len(snap) - len(split(snap)[1]) + 20
    blobs = flips(snap, head)
    blobs = blobs[: head * 8] + blobs[head * 8 :: 7]  # the payload: a sample, for speed
    refused = 0
    for blob in blobs:
        try:
            session = keyless.restore(blob)
        except SnapshotError:
            refused += 1
            continue
        with session:
            assert session.run("1 + 1").value == 2
    assert refused > len(blobs) // 2


# -- crafted headers


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "header, says",
    [
        (deep_json(30_000), "header is damaged"),
        (b'{"format": 4, "x": ' + deep_json(30_000) + b"}", "header is damaged"),
        (b"[1, 2]", "header is damaged"),
        (b'{"format": 1e999}', "format unknown"),
        (b'{"format": ' + b"9" * 5000 + b"}", "header is damaged"),
        (b"\xff\xfe not utf-8", "header is damaged"),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_crafted_headers_are_snapshot_errors(keyless: Sandbox, header: bytes, says: str) -> None:
    assert_refused(keyless, with_header(snapshot_of(keyless), header), says)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("memory_bytes", 1e999, "header is damaged"),
        ("memory_bytes", 10**400, "more than this Sandbox's limits allow"),
        ("memory_bytes", -65536, "memory size"),
        ("memory_bytes", 65537 * 16, "memory size"),
        ("memory_bytes", True, "header is damaged"),
        ("memory_bytes", "1703936", "header is damaged"),
        ("bindings", "double", "header is damaged"),
        ("bindings", [["x"] * 3], "header is damaged"),
        ("guest_sha256", None, "header is damaged"),
        ("mac", "md5", "header is damaged"),
        ("format", 3, "format 3 is not supported"),
        ("format", True, "format unknown"),
    ],
    ids=lambda v: str(v)[:20] if not isinstance(v, int) or v < 10**20 else "10**400",
)
def test_crafted_header_fields_are_snapshot_errors(
    keyless: Sandbox, field: str, value: Any, says: str
) -> None:
    snap = snapshot_of(keyless)
    header, _ = split(snap)
    assert_refused(keyless, with_header(snap, json.dumps({**header, field: value}).encode()), says)


def test_a_header_length_past_the_data_is_a_snapshot_error(keyless: Sandbox) -> None:
    snap = snapshot_of(keyless)
    for hlen in (0, 2**32 - 1, len(snap)):
        forged = MAGIC + hlen.to_bytes(4, "little") + snap[len(MAGIC) + 4 :]
        assert_refused(keyless, forged, "header is damaged")


def test_a_crafted_snapshot_from_a_deep_caller_is_a_snapshot_error(keyless: Sandbox) -> None:
    blob = with_header(snapshot_of(keyless), deep_json(5_000))

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            assert_refused(keyless, blob, "header is damaged")

    deep(200)


# -- memory: a few MB of snapshot never costs more than the memory it restores


@functools.cache
def zeros_deflated(mib: int) -> bytes:
    """A zlib stream of `mib` MiB of zeros (about 1 KB per MiB), built without
    allocating them."""
    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(mib)) + c.flush()


def bomb_payload(claimed_raw: int, inflates_to_mib: int) -> bytes:
    """A one-part payload whose table claims `claimed_raw` bytes and whose zlib stream
    inflates to `inflates_to_mib` MiB of zeros."""
    stream = zeros_deflated(inflates_to_mib)
    table = (1).to_bytes(4, "little") + len(stream).to_bytes(4, "little")
    return table + claimed_raw.to_bytes(4, "little") + stream


def crafted(sb: Sandbox, payload: bytes, **header: Any) -> bytes:
    """A snapshot for `sb` (right format, build and bindings) around `payload`."""
    real, _ = split(snapshot_of(sb))
    head = json.dumps({**real, **header}).encode()
    return MAGIC + len(head).to_bytes(4, "little") + head + payload


@pytest.mark.parametrize(
    "claimed_raw, says",
    [
        (100, "larger than its stated size"),  # the stream is far longer than stated
        (2**32 - 1, "larger than the memory it restores"),  # refused before allocation
    ],
)
def test_a_zlib_bomb_is_refused_within_bounded_memory(
    keyless: Sandbox, claimed_raw: int, says: str
) -> None:
    blob = crafted(keyless, bomb_payload(claimed_raw, 256))
    assert len(blob) < 300_000  # 260 KB that would inflate to 256 MiB

    peak = peak_bytes(lambda: assert_refused(keyless, blob, says))
    assert peak < 8 << 20


def test_a_snapshot_larger_than_the_memory_limit_is_refused_before_inflating(
    keyless: Sandbox,
) -> None:
    blob = crafted(keyless, bomb_payload(2**32 - 1, 1), memory_bytes=4 << 30)
    err = assert_refused(keyless, blob, "more than this Sandbox's limits allow")
    assert "4096 MiB" in str(err)


def test_restoring_a_legitimate_snapshot_costs_about_its_own_size(keyless: Sandbox) -> None:
    snap = snapshot_of(keyless, "globalThis.big = Array.from({length: 50000}, (_, i) => 'r' + i)")

    def restore() -> None:
        with keyless.restore(snap) as s:
            assert s.run("big[49999]").value == "r49999"

    # the raw pages (a few MB) plus one chunk of zlib output at a time
    assert peak_bytes(restore) < 24 << 20


def test_a_signed_sandbox_checks_the_mac_before_inflating(signed: Sandbox) -> None:
    blob = crafted(signed, bomb_payload(100, 256), mac="hmac-sha256") + bytes(32)
    peak = peak_bytes(lambda: assert_refused(signed, blob, "does not match"))
    assert peak < 8 << 20


# -- the local key


def test_local_snapshot_key_is_one_per_user_and_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path / "cache"))
    key = local_snapshot_key()
    assert len(key) == 32 and local_snapshot_key() == key
    code = "from clambot_tools import local_snapshot_key; print(local_snapshot_key().hex())"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert other.stdout.strip() == key.hex()  # another process of this user: same key
    secret = (tmp_path / "cache" / "secret.key").read_bytes()
    assert secret != key  # derived, not the secret itself (the cache's MACs use another)
    sb = Sandbox(limits=LIMITS, snapshot_key=key)
    with sb.restore(snapshot_of(sb)) as s:
        assert s.run("x + 1").value == 42
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path / "cache2"))
    assert local_snapshot_key() != key  # another directory, another secret


def test_local_snapshot_key_needs_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(shared))
    with pytest.raises(ConfigError, match="no private cache directory"):
        local_snapshot_key()
