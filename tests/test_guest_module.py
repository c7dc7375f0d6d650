"""The guest module itself: what it imports is all a script could ever reach."""

from __future__ import annotations

import wasmtime

from clambot_tools import _abi, _engine
from clambot_tools._image import rewrite_with_memory

#: our own host functions and the WASI stubs: nothing else may be importable
ALLOWED_IMPORTS = _abi.IMPORTS


def test_guest_imports_only_our_host_functions() -> None:
    wasm = _engine.guest_wasm_bytes()
    module = wasmtime.Module(wasmtime.Engine(), wasm)
    imports = {(i.module, i.name) for i in module.imports}
    assert imports <= ALLOWED_IMPORTS, imports - ALLOWED_IMPORTS


def test_image_rewrite_keeps_a_valid_module() -> None:
    wasm = _engine.guest_wasm_bytes()
    memory = bytearray(3 * 65536)
    memory[70000:70004] = b"\x01\x02\x03\x04"
    out = rewrite_with_memory(wasm, bytes(memory), 65536)
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, out)
    (mem,) = [e for e in module.exports if e.name == "memory"]
    assert isinstance(mem.type, wasmtime.MemoryType)
    assert mem.type.limits.min >= 3
