"""The start image's format: the guest with QuickJS already initialised, as a module.

Initialising QuickJS (runtime, context, intrinsics, console glue) costs more than a
whole small run. So it is done once (`_startup`): a template instance runs
``_initialize`` and ``cb_init`` with a frozen clock (so the result is reproducible), its
linear memory is read, and `rewrite_with_memory` writes a new module whose data
segments *are* that memory. Wasmtime maps such data copy-on-write, so every fresh
sandbox starts initialised for the price of an instantiation.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import wasmtime

from ._abi import EXPORTS
from ._engine import Runtime

_PAGE = 65536
#: zero runs shorter than this stay inside a data segment
_GAP = 4096


@dataclass
class StartImage:
    """A module to instantiate, and whether its instances still need initialising."""

    runtime: Runtime
    module: wasmtime.Module
    needs_init: bool
    stack_bytes: int
    imports: list[tuple[str, str, wasmtime.FuncType]]
    export_names: tuple[str, ...]
    #: sha256 of the guest build: snapshots carry it and refuse other builds
    guest_sha256: str
    #: memory of a fresh instance above the C stack (snapshots store the difference)
    base_memory: bytes | None = None
    #: the module linked to the host functions, made by the first Guest (`_guest`)
    layout: Any = None


def describe_module(runtime: Runtime, module: wasmtime.Module, needs_init: bool) -> StartImage:
    """The StartImage of `module`: its function imports and our exports, checked.

    Raises wasmtime.WasmtimeError if an export is missing.
    """
    imports = []
    for imp in module.imports:
        ty = imp.type
        assert isinstance(ty, wasmtime.FuncType), f"unexpected import {imp.module}.{imp.name}"
        assert imp.name is not None
        imports.append((imp.module, imp.name, ty))
    names = {e.name for e in module.exports}
    missing = [n for n in EXPORTS if n not in names]
    if missing:
        raise wasmtime.WasmtimeError(f"guest lacks exports {missing}")
    return StartImage(
        runtime,
        module,
        needs_init,
        512 * 1024,
        imports,
        EXPORTS,
        hashlib.sha256(runtime.wasm).hexdigest(),
    )


# ---------------------------------------------------------------- wasm binary surgery


def _leb_u32(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _enc_u32(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_i32(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        done = (n == 0 and not b & 0x40) or (n == -1 and b & 0x40)
        out.append(b if done else b | 0x80)
        if done:
            return bytes(out)


def _sections(wasm: bytes) -> list[tuple[int, bytes]]:
    assert wasm[:8] == b"\0asm\x01\0\0\0", "not a wasm module"
    pos, out = 8, []
    while pos < len(wasm):
        sid = wasm[pos]
        size, pos = _leb_u32(wasm, pos + 1)
        out.append((sid, wasm[pos : pos + size]))
        pos += size
    return out


def rewrite_with_memory(wasm: bytes, memory: bytes, skip_below: int) -> bytes:
    """Return `wasm` with its data replaced by `memory` (bytes below `skip_below`, the
    C stack, are left zero) and its initial memory size set to fit it."""
    segments = []
    for m in re.finditer(rb"[^\x00]+(?:\x00{1,%d}[^\x00]+)*" % _GAP, memory[skip_below:]):
        start = skip_below + m.start()
        chunk = m.group(0)
        segments.append(b"\x00\x41" + _enc_i32(start) + b"\x0b" + _enc_u32(len(chunk)) + chunk)
    data_sec = _enc_u32(len(segments)) + b"".join(segments)
    pages = len(memory) // _PAGE
    out = bytearray(wasm[:8])
    wrote_data = False
    for sid, body in _sections(wasm):
        if sid == 5:  # memory: one memtype; keep its flags and max, raise its min
            count, p = _leb_u32(body, 0)
            assert count == 1
            flags = body[p]
            _, q = _leb_u32(body, p + 1)
            body = _enc_u32(1) + bytes([flags]) + _enc_u32(pages) + body[q:]
        elif sid == 12:  # data count
            body = _enc_u32(len(segments))
        elif sid == 11:
            body = data_sec
            wrote_data = True
        out.append(sid)
        out += _enc_u32(len(body))
        out += body
    assert wrote_data, "guest has no data section"
    return bytes(out)
