"""Binding manifests: every kind of drift is caught and named; signatures are enforced."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from clambot_tools import Binding, Manifest, ManifestError, Sandbox, binding
from clambot_tools._manifest import Drift, generate_key, sign, write_lock
from clambot_tools.cli import main

TOOLS_V1 = """
from clambot_tools import binding

@binding(description="Look up a customer")
def get_customer(customer_id: int) -> dict:
    return {"id": customer_id}

@binding(effects=("write",), description="Issue a refund")
def refund(order_id: str, amount_eur: float) -> dict:
    return {"ok": True}

def helper(x: int) -> int:
    return x
"""


def _module(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bindings(tmp_path: Path, name: str, source: str = TOOLS_V1) -> list[Binding]:
    mod = _module(tmp_path, name, source)
    return [mod.get_customer, mod.refund]


def _drift(bindings: list[Any], lock: Path) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as info:
        Sandbox(bindings=bindings, manifest=lock)
    drift: list[tuple[str, str]] = [
        (d.binding, d.change) for d in cast("tuple[Drift, ...]", info.value.drift)
    ]
    for b, change in drift:  # the message names each difference
        assert b in str(info.value) and change in str(info.value)
    return drift


@pytest.fixture
def locked(tmp_path: Path) -> tuple[list[Binding], Path]:
    bindings = _bindings(tmp_path, "tools_v1")
    lock = write_lock(bindings, tmp_path / "bindings.lock")
    return bindings, lock


def test_the_same_bindings_start(locked: tuple[list[Binding], Path], tmp_path: Path) -> None:
    bindings, lock = locked
    assert Sandbox(bindings=bindings, manifest=lock).run("1 + 1").value == 2
    # the same source loaded again (another process, another machine) matches too
    again = _bindings(tmp_path, "tools_v1")
    Sandbox(bindings=again, manifest=str(lock))


def test_a_lock_is_canonical_and_reviewable(locked: tuple[list[Binding], Path]) -> None:
    bindings, lock = locked
    text = lock.read_text()
    assert write_lock(list(reversed(bindings)), lock.with_name("other.lock")).read_text() == text
    data = json.loads(text)
    refund = data["bindings"]["refund"]
    assert refund["effects"] == ["write"]
    assert refund["arguments_schema"]["required"] == ["order_id", "amount_eur"]
    assert refund["result_schema"] == {"type": "object"}
    assert refund["code"]["function"] == "tools_v1:refund" and refund["code"]["of"] == "source"


def test_added_and_removed_bindings_are_refused(locked: tuple[list[Binding], Path]) -> None:
    bindings, lock = locked

    def extra() -> int:
        return 1

    assert _drift([*bindings, extra], lock) == [("extra", "added")]
    assert _drift(bindings[:1], lock) == [("refund", "removed")]


def test_changed_effects_are_refused(locked: tuple[list[Binding], Path]) -> None:
    bindings, lock = locked
    widened = dataclasses.replace(bindings[0], effects=("read", "network"))
    assert _drift([widened, bindings[1]], lock) == [("get_customer", "effects")]


def test_changed_argument_schema_is_refused(
    locked: tuple[list[Binding], Path], tmp_path: Path
) -> None:
    _, lock = locked
    v2 = TOOLS_V1.replace("amount_eur: float)", "amount_eur: float, currency: str = 'EUR')")
    assert ("refund", "arguments_schema") in _drift(_bindings(tmp_path, "tools_v2", v2), lock)


def test_changed_result_schema_is_refused(
    locked: tuple[list[Binding], Path], tmp_path: Path
) -> None:
    bindings, lock = locked
    declared = dataclasses.replace(bindings[0], result_schema={"type": "array"})
    assert _drift([declared, bindings[1]], lock) == [("get_customer", "result_schema")]


def test_changed_code_is_refused_even_with_the_same_signature(
    locked: tuple[list[Binding], Path], tmp_path: Path
) -> None:
    _, lock = locked
    v2 = TOOLS_V1.replace('return {"ok": True}', 'return {"ok": True, "also": "wire it"}')
    mod = _module(tmp_path, "tools_v1", v2)  # the same module name, other code
    drift = _drift([mod.get_customer, mod.refund], lock)
    assert drift == [("refund", "code")]


def test_changed_code_of_a_closed_over_function_is_refused(tmp_path: Path) -> None:
    src = "def make(f):\n    def call(x: int) -> int:\n        return f(x)\n    return call\n"
    outer = _module(tmp_path, "outer", src)
    v1 = _module(tmp_path, "inner", "def f(x):\n    return x\n")
    lock = write_lock([binding(outer.make(v1.f), name="call")], tmp_path / "bindings.lock")
    v2 = _module(tmp_path, "inner", "def f(x):\n    return x * 1000\n")
    assert _drift([binding(outer.make(v2.f), name="call")], lock) == [("call", "code")]


def test_changed_origin_is_refused(locked: tuple[list[Binding], Path]) -> None:
    bindings, lock = locked
    configured = dataclasses.replace(bindings[0], origin={"server": "crm", "url": "https://x"})
    assert _drift([configured, bindings[1]], lock) == [("get_customer", "origin")]


def test_every_difference_is_named_at_once(
    locked: tuple[list[Binding], Path], tmp_path: Path
) -> None:
    bindings, lock = locked
    widened = dataclasses.replace(bindings[1], effects=("write", "network"), origin={"a": 1})
    drift = _drift([widened, binding(lambda: 1, name="new")], lock)
    assert drift == [
        ("new", "added"),
        ("get_customer", "removed"),
        ("refund", "effects"),
        ("refund", "origin"),
    ]


def test_a_lock_that_is_not_a_lock_is_refused(tmp_path: Path) -> None:
    for content in ("", "[]", '{"format": 99, "bindings": {}}', '{"format": 1}'):
        p = tmp_path / "bindings.lock"
        p.write_text(content)
        with pytest.raises(ManifestError, match="not a binding manifest"):
            Sandbox(manifest=p)
    with pytest.raises(ManifestError, match="cannot read"):
        Sandbox(manifest=tmp_path / "missing.lock")


# -- signatures


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    pem, public = generate_key()
    key = tmp_path / "reviewer.pem"
    key.write_bytes(pem)
    return key, public


def test_a_signed_lock_starts_with_the_key(
    locked: tuple[list[Binding], Path], keys: tuple[Path, str]
) -> None:
    bindings, lock = locked
    key, public = keys
    sign(lock, key.read_bytes())
    Sandbox(bindings=bindings, manifest=Manifest(lock, public_keys=[public]))


def test_an_unsigned_lock_is_refused_when_a_key_is_configured(
    locked: tuple[list[Binding], Path], keys: tuple[Path, str]
) -> None:
    bindings, lock = locked
    with pytest.raises(ManifestError, match="not signed"):
        Sandbox(bindings=bindings, manifest=Manifest(lock, public_keys=[keys[1]]))


def test_a_lock_edited_after_signing_is_refused(
    locked: tuple[list[Binding], Path], keys: tuple[Path, str], tmp_path: Path
) -> None:
    bindings, lock = locked
    key, public = keys
    sign(lock, key.read_bytes())
    # someone widens refund's effects in the lock (and in the code) without a review
    data = json.loads(lock.read_text())
    data["bindings"]["refund"]["effects"] = ["network", "write"]
    lock.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    widened = dataclasses.replace(bindings[1], effects=("write", "network"))
    with pytest.raises(ManifestError, match=r"signature .* is not valid"):
        Sandbox(bindings=[bindings[0], widened], manifest=Manifest(lock, public_keys=[public]))


def test_a_lock_signed_by_another_key_or_a_forged_signature_is_refused(
    locked: tuple[list[Binding], Path], keys: tuple[Path, str], tmp_path: Path
) -> None:
    bindings, lock = locked
    _, public = keys
    other_pem, _ = generate_key()
    sign(lock, other_pem)
    manifest = Manifest(lock, public_keys=[public])
    with pytest.raises(ManifestError, match="not valid"):
        Sandbox(bindings=bindings, manifest=manifest)
    sig = lock.with_name("bindings.lock.sig")
    sig.write_text(base64.b64encode(bytes(64)).decode())
    with pytest.raises(ManifestError, match="not valid"):
        Sandbox(bindings=bindings, manifest=manifest)
    sig.write_text("not base64 !!")
    with pytest.raises(ManifestError, match="not a signature"):
        Sandbox(bindings=bindings, manifest=manifest)
    with pytest.raises(ManifestError, match="not an Ed25519 public key"):
        Sandbox(bindings=bindings, manifest=Manifest(lock, public_keys=["AAAA"]))


# -- the command


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdin=io.StringIO(), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_lock_check_and_run_from_a_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text('[files]\nroot = "data"\n')
    assert _cli(["manifest", "lock", "--config", str(cfg)])[0] == 0
    assert (tmp_path / "bindings.lock").exists()
    code, out, _ = _cli(["manifest", "check", "--config", str(cfg)])
    assert code == 0 and "match" in out
    assert _cli(["run", "-", "--config", str(cfg)])[0] == 0
    # the configuration changes: write access, another root
    (tmp_path / "other").mkdir()
    cfg.write_text('[files]\nroot = "other"\nwrite = true\n')
    code, out, _ = _cli(["manifest", "check", "--config", str(cfg)])
    assert code == 1
    assert (
        "fs_write_text: added" in out
        and "fs_read_text: origin" in out
        and 'root: "data" -> "other"' in out
    )
    code, _, err = _cli(["run", "-", "--config", str(cfg)])  # refuses to start
    assert code == 2 and "fs_write_text: added" in err
    code, out, _ = _cli(["check", str(cfg)])
    assert code == 1 and "fs_write_text: added" in out


def test_signing_from_the_command(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    key = tmp_path / "reviewer.pem"
    code, out, _ = _cli(["manifest", "keygen", str(key)])
    assert code == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    public = out.split("sandbox.toml): ")[1].strip()
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text(f'[files]\nroot = "data"\n[manifest]\npublic_key = "{public}"\n')
    assert _cli(["manifest", "lock", "--config", str(cfg)])[0] == 0
    code, out, _ = _cli(["manifest", "check", "--config", str(cfg)])
    assert code == 1 and "not signed" in out
    code, _, err = _cli(["run", "-", "--config", str(cfg)])
    assert code == 2 and "not signed" in err
    assert _cli(["manifest", "sign", "--config", str(cfg), "--key", str(key)])[0] == 0
    code, out, _ = _cli(["manifest", "check", "--config", str(cfg)])
    assert code == 0 and "signed by key" in out
    assert _cli(["run", "-", "--config", str(cfg)])[0] == 0
    # re-locking drops the signature: the new lock needs a new review
    assert _cli(["manifest", "lock", "--config", str(cfg)])[0] == 0
    assert _cli(["run", "-", "--config", str(cfg)])[0] == 2
