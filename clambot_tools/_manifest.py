"""Binding manifests: pin the bindings a deployment grants, and refuse any other.

A lock file (``bindings.lock``, JSON) records, for each binding: its effects, the JSON
Schema of its arguments, the JSON Schema of its result where known, which function
implements it with the sha256 of that function's source (and of functions it closes
over), and its ``origin`` (for standard and MCP bindings: the factory or server and its
configuration). ``Sandbox(manifest=...)`` compares its bindings with the lock and
refuses to start when any differs, naming every difference.

A lock may be signed (Ed25519, with the optional ``cryptography`` package): the
signature of the lock file's exact bytes sits beside it in ``bindings.lock.sig``. When
public keys are given, an unsigned lock, or one whose signature no given key verifies,
is refused: production then accepts only what a reviewer signed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._bindings import Binding, type_hints
from ._errors import ManifestError

#: the lock's file name, beside the sandbox.toml it pins
LOCK_NAME = "bindings.lock"
#: appended to the lock's path to name its signature
SIGNATURE_SUFFIX = ".sig"
#: version of the lock format this code reads and writes
LOCK_FORMAT = 1
#: largest lock or signature file read (a lock of a few hundred bindings is ~1 MiB)
_MAX_LOCK_BYTES = 32 << 20

Change = Literal[
    "added", "removed", "effects", "arguments_schema", "result_schema", "code", "origin"
]


@dataclass(frozen=True)
class Drift:
    """One difference between a lock and the bindings granted.

    Attributes:
        binding: the binding's name.
        change: what differs: ``added`` (granted, not in the lock), ``removed`` (in the
            lock, not granted), ``effects``, ``arguments_schema``, ``result_schema``,
            ``code`` (the function or its source) or ``origin`` (its configuration).
        detail: the locked and the current value, shortly.
    """

    binding: str
    change: Change
    detail: str

    def __str__(self) -> str:
        return f"{self.binding}: {self.change} ({self.detail})"


@dataclass(frozen=True)
class Manifest:
    """A lock file to hold a Sandbox to, and the keys that must have signed it.

    Attributes:
        path: the lock file (``bindings.lock``).
        public_keys: Ed25519 public keys, each PEM text or the base64 of the raw 32
            bytes. When any is given, ``path + ".sig"`` must hold a signature of the
            lock by one of them.
    """

    path: str | os.PathLike[str]
    public_keys: Sequence[str] = ()


# -- what a binding is, as the lock records it


def _source_of(obj: Any) -> tuple[str, str]:
    """(how, text) identifying `obj`'s code: its source, else its bytecode, else its name."""
    try:
        return "source", inspect.getsource(obj).replace("\r\n", "\n")
    except (OSError, TypeError):
        pass
    code = getattr(obj, "__code__", None)
    if code is not None:
        return "bytecode", code.co_code.hex() + repr(code.co_consts)
    return "name", _qualname(obj)


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{name}"


def _target(func: Any) -> Any:
    """The code behind a callable: through wrappers, partials, bound methods, objects."""
    for _ in range(8):
        if isinstance(func, functools.partial):
            func = func.func
        elif inspect.ismethod(func):
            func = func.__func__
        elif hasattr(func, "__wrapped__"):
            func = func.__wrapped__
        else:
            break
    if not inspect.isroutine(func) and callable(func):
        return type(func)
    return func


def code_identity(func: Callable[..., Any]) -> dict[str, str]:
    """Which function implements a binding and the sha256 of its code: its source (lines
    ending ``\\n``), then the code of each function it closes over, recursively."""
    target = _target(func)
    h = hashlib.sha256()
    how, text = _source_of(target)
    h.update(text.encode("utf-8", "surrogatepass"))
    seen = {id(target)}
    todo = list(_closed_over(target))
    while todo and len(seen) < 64:
        inner = _target(todo.pop(0))
        if id(inner) in seen:
            continue
        seen.add(id(inner))
        h.update(b"\0" + _source_of(inner)[1].encode("utf-8", "surrogatepass"))
        todo.extend(_closed_over(inner))
    return {"function": _qualname(target), "of": how, "sha256": h.hexdigest()}


def _closed_over(func: Any) -> list[Any]:
    cells = getattr(func, "__closure__", None) or ()
    out = []
    for cell in cells:
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if inspect.isroutine(v) or isinstance(v, functools.partial):
            out.append(v)
    return out


def _result_schema(b: Binding) -> dict[str, Any] | None:
    if b.result_schema is not None:
        return b.result_schema
    hints = type_hints(b.func)
    if "return" not in hints:
        return None
    try:
        from pydantic import TypeAdapter

        schema: dict[str, Any] = TypeAdapter(hints["return"]).json_schema()
    except Exception:  # noqa: BLE001 - a type pydantic cannot describe: not known
        return None
    return schema


def _as_json(value: Any) -> Any:
    """`value` as plain JSON data (tuples become lists), as it reads back from a lock."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def entry(b: Binding) -> dict[str, Any]:
    """What the lock records of one binding."""
    data: dict[str, Any] = _as_json(
        {
            "effects": sorted(set(b.effects)),
            "arguments_schema": b.arguments_schema(),
            "result_schema": _result_schema(b),
            "code": code_identity(b.func),
            "origin": b.origin,
        }
    )
    return data


def lock_text(bindings: Iterable[Binding]) -> str:
    """The lock of `bindings` as text: canonical JSON (sorted keys), so the same
    bindings always give the same bytes and a review diff shows only what changed."""
    data = {"format": LOCK_FORMAT, "bindings": {b.name: entry(b) for b in bindings}}
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_lock(bindings: Iterable[Binding], path: str | os.PathLike[str]) -> Path:
    """Write the lock of `bindings` to `path` (atomically) and return the path.

    A signature beside it no longer matches and is removed. Raises ManifestError if
    the file cannot be written.
    """
    p = Path(path)
    _write_atomic(p, lock_text(bindings).encode("utf-8", "surrogatepass"))
    sig = _sig_path(p)
    try:
        sig.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ManifestError(f"{sig}: cannot remove the old signature: {exc.strerror}") from None
    return p


def _write_atomic(p: Path, data: bytes) -> None:
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ManifestError(f"{p}: cannot write: {exc.strerror}") from None


def _read_capped(p: Path, what: str) -> bytes:
    try:
        with open(p, "rb") as f:
            data = f.read(_MAX_LOCK_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read the {what}: {exc.strerror}") from None
    if len(data) > _MAX_LOCK_BYTES:
        raise ManifestError(f"{p}: the {what} is larger than {_MAX_LOCK_BYTES >> 20} MiB")
    return data


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The lock at `path`, checked for shape. Raises ManifestError if it cannot be read
    or is not a lock of this format."""
    p = Path(path)
    raw = _read_capped(p, "binding manifest")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ManifestError(f"{p}: not a binding manifest (not JSON)") from None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        raise ManifestError(f"{p}: not a binding manifest of format {LOCK_FORMAT}")
    bindings = data.get("bindings")
    if not isinstance(bindings, dict) or not all(isinstance(v, dict) for v in bindings.values()):
        raise ManifestError(f"{p}: not a binding manifest (no 'bindings' object)")
    return data


#: a key one side of a difference does not have
_GONE = object()


def _short(value: Any, limit: int = 80) -> str:
    if value is _GONE:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare(locked: dict[str, Any], bindings: Iterable[Binding]) -> list[Drift]:
    """Every difference between a lock (as `read_lock` returns it) and `bindings`:
    bindings added and removed, then changed fields, in name order."""
    old: dict[str, Any] = locked["bindings"]
    new = {b.name: entry(b) for b in bindings}
    drift: list[Drift] = []
    for name in sorted(new.keys() - old.keys()):
        drift.append(Drift(name, "added", "granted but not in the lock"))
    for name in sorted(old.keys() - new.keys()):
        drift.append(Drift(name, "removed", "in the lock but not granted"))
    for name in sorted(new.keys() & old.keys()):
        was, now = old[name], new[name]
        for change in ("effects", "arguments_schema", "result_schema", "code", "origin"):
            if was.get(change) != now[change]:
                if change == "code":
                    detail = _code_detail(was.get("code"), now["code"])
                else:
                    detail = _detail(was.get(change), now[change])
                drift.append(Drift(name, change, detail))
    return drift


def _detail(was: Any, now: Any) -> str:
    """What changed between two JSON values: for objects, each key that differs."""
    if isinstance(was, dict) and isinstance(now, dict):
        keys = sorted(k for k in was.keys() | now.keys() if was.get(k, _GONE) != now.get(k, _GONE))
        parts = [
            f"{k}: {_short(was.get(k, _GONE), 40)} -> {_short(now.get(k, _GONE), 40)}"
            for k in keys[:4]
        ]
        return ", ".join(parts) + (", ..." if len(keys) > 4 else "")
    return f"locked {_short(was)}, now {_short(now)}"


def _code_detail(was: Any, now: dict[str, str]) -> str:
    if not isinstance(was, dict):
        return "the lock records no code"
    if was.get("function") != now["function"]:
        return f"was {was.get('function')}, now {now['function']}"
    return f"{now['function']}: its {now['of']} changed"


# -- signatures


def _sig_path(lock: Path) -> Path:
    return lock.with_name(lock.name + SIGNATURE_SUFFIX)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ManifestError(
            "signing and verifying binding manifests needs the 'cryptography' package: "
            "pip install 'clambot-tools[sign]'"
        ) from None
    return ed25519, serialization


def load_public_key(text: str) -> Any:
    """An Ed25519 public key from PEM text or the base64 of its raw 32 bytes.

    Raises ManifestError if it is neither."""
    ed25519, serialization = _crypto()
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError):
        raise ManifestError("a manifest public key is not an Ed25519 public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ManifestError("a manifest public key is not an Ed25519 public key")
    return key


def key_id(public_key: Any) -> str:
    """A short name of a public key: the first 16 hex digits of its raw bytes' sha256."""
    _, serialization = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key() -> tuple[bytes, str]:
    """A new Ed25519 key pair: the private key as PEM (PKCS8, unencrypted) and the public
    key as base64 of its raw bytes (what a config's ``public_key`` takes)."""
    ed25519, serialization = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    pem: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return pem, base64.b64encode(raw).decode()


def sign(lock: str | os.PathLike[str], private_key_pem: bytes) -> tuple[Path, str]:
    """Sign the lock file's bytes with an Ed25519 private key (PEM, unencrypted); write
    the signature beside it. Returns the signature's path and the key's id.

    Raises ManifestError if the lock is unreadable or not a lock, or the key is not an
    unencrypted Ed25519 private key."""
    ed25519, serialization = _crypto()
    p = Path(lock)
    read_lock(p)
    data = _read_capped(p, "binding manifest")
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError):
        raise ManifestError("the signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ManifestError("the signing key is not an Ed25519 private key")
    sig = _sig_path(p)
    _write_atomic(sig, base64.b64encode(key.sign(data)) + b"\n")
    return sig, key_id(key.public_key())


def verify_signature(lock: str | os.PathLike[str], public_keys: Sequence[str]) -> str:
    """Check that the lock's signature file holds a signature of its exact bytes by one
    of `public_keys`; returns that key's id.

    Raises ManifestError if the signature is missing, malformed or made by no given key
    (or over other bytes)."""
    keys = [load_public_key(k) for k in public_keys]  # ManifestError without cryptography
    from cryptography.exceptions import InvalidSignature

    p = Path(lock)
    data = _read_capped(p, "binding manifest")
    sig_file = _sig_path(p)
    if not sig_file.exists():
        raise ManifestError(
            f"{p} is not signed ({sig_file.name} is missing) and a signature is required"
        )
    try:
        signature = base64.b64decode(_read_capped(sig_file, "signature").strip(), validate=True)
    except ValueError:
        raise ManifestError(f"{sig_file}: not a signature (not base64)") from None
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return key_id(key)
    ids = ", ".join(key_id(k) for k in keys)
    raise ManifestError(
        f"{p}: the signature in {sig_file.name} is not valid for this file with the "
        f"configured key(s) {ids}: the lock was changed after signing, or signed by "
        "another key"
    )


# -- what Sandbox calls


def check(bindings: Sequence[Binding], manifest: Manifest | str | os.PathLike[str]) -> None:
    """Hold `bindings` to a manifest: its signature (when keys are given), then every
    binding. Raises ManifestError naming what differs, or why the lock is refused."""
    m = manifest if isinstance(manifest, Manifest) else Manifest(manifest)
    if isinstance(m.public_keys, str):
        raise ManifestError("Manifest.public_keys is a list of keys, not one str")
    if m.public_keys:
        verify_signature(m.path, m.public_keys)
    drift = compare(read_lock(m.path), bindings)
    if drift:
        raise ManifestError(
            f"the bindings differ from {os.fspath(m.path)}: " + "; ".join(map(str, drift)),
            drift=drift,
        )
