"""sandbox.toml: every key maps onto its object, and defaults live only in the objects."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import AuditLog, ConfigError, Limits, Policy
from clambot_tools.cli._config import (
    AuditSection,
    FilesSection,
    HttpSection,
    LimitsSection,
    PolicySection,
    RolloutSection,
    SqlSection,
    build,
    load_config,
)
from clambot_tools.cli._report import Thresholds
from clambot_tools.stdlib import files, http, sql


def _params(func: Any, *, skip: tuple[str, ...] = ()) -> set[str]:
    return {p for p in inspect.signature(func).parameters if p not in skip}


def _fields(obj: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


@pytest.mark.parametrize(
    ("section", "target", "required"),
    [
        (LimitsSection, _fields(Limits), ()),
        (PolicySection, _fields(Policy) - {"approve"}, ()),
        (FilesSection, _params(files.bindings), ("root",)),
        (HttpSection, _params(http.bindings), ("allow_hosts",)),
        (SqlSection, _params(sql.bindings) - {"db_path"} | {"database"}, ("database",)),
        (AuditSection, _params(AuditLog) - {"sink"} | {"path"}, ("path",)),
        (RolloutSection, _fields(Thresholds), ()),
    ],
)
def test_every_option_of_the_object_is_a_key_and_unset_means_its_own_default(
    section: Any, target: set[str], required: tuple[str, ...]
) -> None:
    fields = section.model_fields
    assert set(fields) == target  # the file can say everything the object takes
    for name, f in fields.items():
        if name in required:
            assert f.is_required()
        else:  # not set in the file: the object's default applies, not one of ours
            assert f.default is None, name


def test_an_empty_file_gives_the_objects_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text("")
    kwargs = build(load_config(cfg))
    assert kwargs["limits"] == Limits() and kwargs["policy"] == Policy()
    assert kwargs["bindings"] == [] and kwargs["audit"] is None and kwargs["manifest"] is None


def test_keys_reach_their_objects(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text(
        "[limits]\ntimeout_s = 2\nfuel = 1000000\n"
        '[policy]\nauto_approve = ["write"]\nmax_calls = 7\n'
        '[files]\nroot = "data"\nwrite = true\nprefix = "f_"\nmax_entries = 3\n'
    )
    kwargs = build(load_config(cfg))
    assert kwargs["limits"] == Limits(timeout_s=2, fuel=1_000_000)
    assert kwargs["policy"] == Policy(auto_approve=["write"], max_calls=7)
    names = [b.name for b in kwargs["bindings"]]
    assert "f_write_text" in names and "fs_read_text" not in names
    origin = kwargs["bindings"][0].origin
    # the options in effect, the factory's defaults included, the root as written
    assert origin["stdlib"] == "files" and origin["root"] == "data"
    assert origin["max_entries"] == 3 and origin["max_read_bytes"] == 1 << 20


def test_wrong_types_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "sandbox.toml"
    for text, word in (
        ('[policy]\nmax_calls = "5"\n', "max_calls"),
        ("[files]\nroot = 'd'\nwrite = 1\n", "write"),
        ("[rollout]\nmax_p95 = 3\n", "max_p95"),
        ("[limits]\ntimeout_s = 0\n", "timeout_s"),
    ):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=word):
            build(load_config(cfg))


def test_secrets_are_recorded_by_reference_never_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKEN", "sk-secret-value")
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text(
        '[http]\nallow_hosts = ["api.example.com"]\n'
        '[http.secrets."api.example.com"]\n'
        'Authorization = { env = "API_TOKEN", prefix = "Bearer " }\nX-Key = "literal-secret"\n'
    )
    (b,) = build(load_config(cfg))["bindings"]
    assert b.origin is not None
    text = repr(b.origin)
    assert "sk-secret-value" not in text and "literal-secret" not in text
    assert b.origin["secrets"] == {
        "api.example.com": {
            "Authorization": {"env": "API_TOKEN", "prefix": "Bearer "},
            "X-Key": "<written in the config>",
        }
    }
