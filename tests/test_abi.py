"""The guest's ABI is written down once, in clambot_tools/_abi.py: these tests read
quickjs_wasm/guest.c and check every constant, the CbIo layout and every import and
export name against it, and the pinned wasmtime against the installed one."""

from __future__ import annotations

import re
from pathlib import Path

import wasmtime

from clambot_tools import _abi, _engine, _wasm

GUEST_C = (Path(__file__).resolve().parents[1] / "quickjs_wasm" / "guest.c").read_text()


def _enum(prefix: str) -> dict[str, int]:
    """The members of the C enum whose names start with `prefix`."""
    found = dict(re.findall(rf"\b{prefix}([A-Z_]+)\s*=\s*(\d+)", GUEST_C))
    return {k: int(v) for k, v in found.items()}


def test_status_codes_match_guest_c() -> None:
    assert _enum("ST_") == {s.name: s.value for s in _abi.State}
    assert _enum("RESOLVE_") == {r.name: r.value for r in _abi.Resolve}
    assert _enum("ABORT_") == {a.name: a.value for a in _abi.Abort}


def test_cbio_layout_matches_guest_c() -> None:
    body = re.search(r"typedef struct \{(.*?)\} CbIo;", GUEST_C, re.S)
    assert body is not None
    fields = re.findall(r"int32_t\s+(\w+);", body.group(1))
    assert tuple(fields) == _abi.IO_FIELDS
    assert _abi.io_offset("inline_ptr") == 20 and _abi.io_offset("poll_every") == 28


def test_exports_and_imports_match_guest_c_and_the_module() -> None:
    exports = set(re.findall(r'CB_EXPORT\("(\w+)"\)', GUEST_C))
    assert exports == set(_abi.EXPORTS) - {"_initialize"}
    imports = {("clambot", n) for n in re.findall(r'CB_IMPORT\("(\w+)"\)', GUEST_C)}
    assert imports == {i for i in _abi.IMPORTS if i[0] == "clambot"}
    module = wasmtime.Module(wasmtime.Engine(), _engine.guest_wasm_bytes())
    assert {e.name for e in module.exports} >= set(_abi.EXPORTS)
    assert {(i.module, i.name) for i in module.imports} <= _abi.IMPORTS


def test_the_pinned_wasmtime_is_the_installed_one() -> None:
    pin = re.search(
        r'"wasmtime==([\d.]+)"',
        (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(),
    )
    assert pin is not None
    assert pin.group(1) == _wasm.WASMTIME_VERSION == _wasm.installed_version()
