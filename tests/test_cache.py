"""The compiled-module cache: private, checksummed, atomic, and never fatal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import wasmtime

from clambot_tools import _engine


def _module_files(d: Path) -> list[Path]:
    return sorted(d.glob("guest-*.cwasm"))


def test_cache_is_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(root))
    rt = _engine.get_runtime()
    produced = []

    def produce() -> bytes:
        produced.append(1)
        return rt.wasm

    m1 = _engine.cached_module(rt.engine, b"test-key", False, produce)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    files = _module_files(root)
    assert len(files) == 1
    m2 = _engine.cached_module(rt.engine, b"test-key", False, produce)
    assert produced == [1]  # the second came from disk
    assert isinstance(m1, wasmtime.Module) and isinstance(m2, wasmtime.Module)


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path))
    rt = _engine.get_runtime()
    _engine.cached_module(rt.engine, b"k2", False, lambda: rt.wasm)
    (path,) = _module_files(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte in the native code
    path.write_bytes(bytes(blob))
    produced = []
    _engine.cached_module(rt.engine, b"k2", False, lambda: produced.append(1) or rt.wasm)
    assert produced == [1]
    assert path.read_bytes() != bytes(blob)  # rewritten with a good copy


def test_loose_directory_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "shared"
    loose.mkdir()
    os.chmod(loose, 0o777)
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(loose))
    assert _engine.cache_dir() is None
    rt = _engine.get_runtime()
    module = _engine.cached_module(rt.engine, b"k3", False, lambda: rt.wasm)
    assert isinstance(module, wasmtime.Module)
    assert _module_files(loose) == []


def test_group_writable_file_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path))
    rt = _engine.get_runtime()
    _engine.cached_module(rt.engine, b"k4", False, lambda: rt.wasm)
    (path,) = _module_files(tmp_path)
    os.chmod(path, 0o666)
    produced = []
    _engine.cached_module(rt.engine, b"k4", False, lambda: produced.append(1) or rt.wasm)
    assert produced == [1]


def test_concurrent_processes_share_the_cache(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "from clambot_tools import Sandbox; print(Sandbox().run('6*7').value)"
    env = dict(os.environ, CLAMBOT_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180)[0].strip() for p in procs]
    assert outs == ["42"] * 3
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written files left behind


def test_cache_file_without_matching_checksum_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path))
    rt = _engine.get_runtime()
    _engine.cached_module(rt.engine, b"k5", False, lambda: rt.wasm)
    (path,) = _module_files(tmp_path)
    path.with_suffix(".sha256").unlink()
    produced = []
    _engine.cached_module(rt.engine, b"k5", False, lambda: produced.append(1) or rt.wasm)
    assert produced == [1]
    assert path.with_suffix(".sha256").exists()


def test_old_entries_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_engine, "_CACHE_KEEP", 2)
    rt = _engine.get_runtime()
    for i in range(4):
        _engine.cached_module(rt.engine, f"prune-{i}".encode(), False, lambda: rt.wasm)
        newest = max(_module_files(tmp_path), key=lambda p: p.stat().st_mtime)
        os.utime(newest, (1_000_000 + i, 1_000_000 + i))  # a clear order of writing
    assert len(_module_files(tmp_path)) == 2
    assert len(list(tmp_path.glob("guest-*.sha256"))) == 2
