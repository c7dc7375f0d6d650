"""The compiled-module cache: private, keyed (HMAC), atomic, read into memory, and never
fatal. A same-user script that can write the cache directory (through a files binding,
say) can neither get a module of its own loaded nor crash a process using the cache."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

from clambot_tools import _engine


def _module_files(d: Path) -> list[Path]:
    return sorted(d.glob("guest-*.cwasm"))


def _wasm(answer: int) -> bytes:
    """A tiny module whose f() returns `answer`: compiles in milliseconds."""
    return bytes(wasmtime.wat2wasm(f'(module (func (export "f") (result i32) i32.const {answer}))'))


def _answer(module: wasmtime.Module) -> int:
    """What f() of `module` returns: what a user of the cached module would see."""
    store = wasmtime.Store(_engine.get_runtime().engine)
    store.set_epoch_deadline(1)
    f = wasmtime.Instance(store, module, []).exports(store)["f"]
    assert isinstance(f, wasmtime.Func)
    result = f(store)
    assert isinstance(result, int)
    return result


def _again(key: bytes, produced: list[int], answer: int = 42) -> wasmtime.Module:
    """The module cached under `key` (compiled, and noted in `produced`, on a miss)."""

    def produce() -> bytes:
        produced.append(1)
        return _wasm(answer)

    return _engine.cached_module(_engine.get_runtime().engine, key, False, produce)


def _compile_into(d: Path, key: bytes) -> tuple[Path, list[int]]:
    """Cache a module under `key` in `d`: (its file, the list a rebuild appends to)."""
    _again(key, [])
    (path,) = _module_files(d)
    return path, []


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(root))
    return root


def test_cache_is_private_and_reused(cache: Path) -> None:
    produced: list[int] = []
    m1 = _again(b"test-key", produced)
    assert _answer(m1) == 42
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(_module_files(cache)) == 1
    secret = cache / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.stat().st_size == 32
    m2 = _again(b"test-key", produced)
    assert produced == [1]  # the second came from disk
    assert _answer(m2) == 42
    assert isinstance(m1, wasmtime.Module) and isinstance(m2, wasmtime.Module)


def test_corrupt_cache_file_is_rebuilt(cache: Path) -> None:
    path, produced = _compile_into(cache, b"k2")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte in the native code
    path.write_bytes(bytes(blob))
    _again(b"k2", produced)
    assert produced == [1]
    assert path.read_bytes() != bytes(blob)  # rewritten with a good copy


def test_substituted_module_with_a_valid_checksum_is_refused_and_recompiled(
    cache: Path,
) -> None:
    """The attack of the security review: a script puts another module (same size, its
    code differs in one byte) in place of the cached one and rewrites every checksum
    it can compute."""
    path, produced = _compile_into(cache, b"k-sub")
    original = path.read_bytes()
    engine = _engine.get_runtime().engine
    good = bytes(wasmtime.Module(engine, _wasm(42)).serialize())
    evil = bytes(wasmtime.Module(engine, _wasm(43)).serialize())
    assert len(good) == len(evil) and good in original  # stored verbatim
    forged = original.replace(good, evil)
    assert len(forged) == len(original)
    path.write_bytes(forged)
    for sidecar in (path.with_suffix(".sha256"), path.with_suffix(".mac")):
        sidecar.write_text(hashlib.sha256(forged).hexdigest())
    for p in cache.iterdir():
        os.chmod(p, 0o600)
    assert _answer(_again(b"k-sub", produced)) == 42
    assert produced == [1]
    assert path.read_bytes() == original  # the good copy is back


def test_a_valid_entry_under_another_name_is_refused(cache: Path) -> None:
    """A MAC covers the entry's name: one good module cannot stand in for another."""
    path, _ = _compile_into(cache, b"k-a")
    produced: list[int] = []
    _again(b"k-b", produced, answer=7)
    (other,) = [p for p in _module_files(cache) if p != path]
    for suffix in (".cwasm", ".sha256"):  # the file and any sidecar an attacker sees
        if path.with_suffix(suffix).exists():
            other.with_suffix(suffix).write_bytes(path.with_suffix(suffix).read_bytes())
    assert _answer(_again(b"k-b", produced, answer=7)) == 7
    assert produced == [1, 1]


def test_tampered_key_file_means_recompile(cache: Path) -> None:
    _, produced = _compile_into(cache, b"k-key")
    secret = cache / "secret.key"
    secret.write_bytes(os.urandom(32))  # still 0600, the right size: just not the key
    _again(b"k-key", produced)
    assert produced == [1]
    _again(b"k-key", produced)
    assert produced == [1]  # stored again under the key now in the file


@pytest.mark.parametrize("damage", ["loose", "short", "symlink"])
def test_an_unusable_key_file_is_replaced(cache: Path, tmp_path: Path, damage: str) -> None:
    _, produced = _compile_into(cache, b"k-loose")
    secret = cache / "secret.key"
    old = secret.read_bytes()
    if damage == "loose":
        os.chmod(secret, 0o644)  # others could read it: no longer a secret
    elif damage == "short":
        secret.write_bytes(b"abc")
    else:
        target = tmp_path / "elsewhere.key"
        target.write_bytes(old)
        os.chmod(target, 0o600)
        secret.unlink()
        secret.symlink_to(target)
    _again(b"k-loose", produced)
    assert produced == [1]
    st = os.stat(secret, follow_symlinks=False)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert secret.read_bytes() != old and st.st_size == 32


def test_a_module_wasmtime_refuses_is_rebuilt(cache: Path) -> None:
    """A file with a right MAC whose payload Wasmtime will not take (made by another
    Wasmtime build, say) is rebuilt too."""
    path, produced = _compile_into(cache, b"k-refused")
    key = _engine.local_secret(cache, b"module-cache")
    assert key is not None
    payload = b"not a compiled module" * 100
    path.write_bytes(_engine._CACHE_MAGIC + _engine._cache_mac(key, path.name, payload) + payload)
    assert _answer(_again(b"k-refused", produced)) == 42
    assert produced == [1]


def test_loose_directory_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loose = tmp_path / "shared"
    loose.mkdir()
    os.chmod(loose, 0o777)
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(loose))
    assert _engine.cache_dir() is None
    produced: list[int] = []
    assert isinstance(_again(b"k3", produced), wasmtime.Module)
    assert _module_files(loose) == [] and not (loose / "secret.key").exists()


def test_group_writable_file_is_not_trusted(cache: Path) -> None:
    path, produced = _compile_into(cache, b"k4")
    os.chmod(path, 0o666)
    _again(b"k4", produced)
    assert produced == [1]


def test_an_older_versions_cache_is_left_alone(cache: Path) -> None:
    """Files of the checksum-sidecar format (another version of the package may still
    use them) neither load nor get overwritten."""
    cache.mkdir(mode=0o700)
    engine = _engine.get_runtime().engine
    name = hashlib.sha256(b"k5\0" + _engine._settings_key(False).encode()).hexdigest()
    payload = bytes(wasmtime.Module(engine, _wasm(42)).serialize())
    old = cache / f"guest-{name}.cwasm"
    old.write_bytes(payload)
    old.with_suffix(".sha256").write_text(hashlib.sha256(payload).hexdigest())
    produced: list[int] = []
    _again(b"k5", produced)
    assert produced == [1]
    assert old.read_bytes() == payload and len(_module_files(cache)) == 2


def test_old_entries_are_pruned(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "_CACHE_KEEP", 2)
    produced: list[int] = []
    for i in range(4):
        _again(f"prune-{i}".encode(), produced)
        newest = max(_module_files(cache), key=lambda p: p.stat().st_mtime)
        os.utime(newest, (1_000_000 + i, 1_000_000 + i))  # a clear order of writing
    assert len(_module_files(cache)) == 2
    assert (cache / "secret.key").exists()


# -- other processes


def _python(code: str, cache: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CLAMBOT_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_concurrent_processes_share_the_cache(tmp_path: Path) -> None:
    code = "from clambot_tools import Sandbox; print(Sandbox().run('6*7').value)"
    env = dict(os.environ, CLAMBOT_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180)[0].strip() for p in procs]
    assert outs == ["42"] * 3
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written files left behind
    assert (tmp_path / "secret.key").stat().st_size == 32  # one secret, made once


EMPTY_THE_CACHE_UNDER_A_LIVE_SANDBOX = """
import glob, os
from clambot_tools import Sandbox
files = sorted(glob.glob(os.path.join(os.environ["CLAMBOT_CACHE_DIR"], "guest-*.cwasm")))
inodes = [os.stat(p).st_ino for p in files]
sb = Sandbox()
assert sb.run("1 + 1").value == 2
assert [os.stat(p).st_ino for p in files] == inodes, "not loaded from the cache"
for p in files:
    os.truncate(p, 0)  # what a script with write access to the directory can do
for _ in range(20):  # fresh instances of the module whose file is now empty
    res = sb.run("JSON.stringify([1, 2, 3].map((x) => x * 2)) + new Error('e').stack")
    assert res.ok, res.error
with sb.session() as s:
    s.run("let y = 40")
    assert s.run("y + 2").value == 42
print("alive")
"""


def test_emptying_the_cache_under_a_live_sandbox_does_not_crash_it(tmp_path: Path) -> None:
    warm = _python("from clambot_tools import Sandbox; Sandbox().run('1')", tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert _module_files(tmp_path)
    proc = _python(EMPTY_THE_CACHE_UNDER_A_LIVE_SANDBOX, tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "alive"
