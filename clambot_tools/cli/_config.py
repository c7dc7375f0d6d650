"""sandbox.toml: limits, policy, standard bindings and audit for the `clambot` CLI.

[limits]                  # any field of Limits
timeout_s = 2
memory_mb = 64

[policy]                  # allow, deny_effects, max_calls, retry_*
deny_effects = ["network"]

[files]                   # clambot_tools.stdlib.files
root = "./data"           # relative paths are relative to the config file
write = false

[http]                    # clambot_tools.stdlib.http
allow_hosts = ["api.example.com"]
[http.secrets."api.example.com"]
Authorization = { env = "API_TOKEN", prefix = "Bearer " }   # never in the file itself

[sql]                     # clambot_tools.stdlib.sql
database = "app.db"

[audit]
path = "audit.jsonl"
include_args = false
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._bindings import Binding, Effect
from ._errors import ConfigError
from ._policy import Approver


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsSection(_Section):
    timeout_s: float | None = None
    memory_mb: int | None = None
    stack_kb: int | None = None
    max_log_bytes: int | None = None
    max_result_bytes: int | None = None
    fuel: int | None = None


class PolicySection(_Section):
    allow: list[str] | None = None
    deny_effects: list[Effect] = []
    max_calls: int | None = 1000
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05
    retry_max_backoff_s: float = 2.0


class FilesSection(_Section):
    root: str
    write: bool = False
    max_read_bytes: int = 1 << 20
    max_write_bytes: int = 1 << 20


class SecretRef(_Section):
    env: str
    prefix: str = ""


class HttpSection(_Section):
    allow_hosts: list[str]
    secrets: dict[str, dict[str, str | SecretRef]] = {}
    timeout_s: float = 10.0
    max_response_bytes: int = 1 << 20
    allow_private: bool = False


class SqlSection(_Section):
    database: str
    max_rows: int = 1000


class AuditSection(_Section):
    path: str
    include_args: bool = False


class SandboxConfig(_Section):
    """The whole file. Unknown sections or keys are errors (a typo must not pass)."""

    limits: LimitsSection = Field(default_factory=LimitsSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    files: FilesSection | None = None
    http: HttpSection | None = None
    sql: SqlSection | None = None
    audit: AuditSection | None = None


def load_config(path: str | Path) -> tuple[SandboxConfig, Path]:
    """Read and validate a sandbox.toml; returns it and its directory.

    Raises ConfigError with every problem found (file, TOML syntax, unknown keys, types).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        cfg = SandboxConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{p}: {problems}") from None
    return cfg, p.resolve().parent


def _secret(value: str | SecretRef) -> str:
    if isinstance(value, str):
        return value
    if value.env not in os.environ:
        raise ConfigError(f"the environment variable {value.env} (a secret) is not set")
    return value.prefix + os.environ[value.env]


def build(cfg: SandboxConfig, base: Path, approve: Approver | None = None) -> dict[str, Any]:
    """Keyword arguments for Sandbox (limits, policy, bindings, audit) from a config;
    `approve` becomes the policy's approver for write bindings.

    Raises ConfigError for invalid values or a missing secret.
    """
    from ._audit import AuditLog
    from ._limits import Limits
    from ._policy import Policy

    limits = Limits(**{k: v for k, v in cfg.limits.model_dump().items() if v is not None})
    policy_kwargs: dict[str, Any] = cfg.policy.model_dump()
    bindings: list[Binding] = []

    def rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    if cfg.files is not None:
        from .stdlib import files

        bindings += files.bindings(
            rel(cfg.files.root),
            write=cfg.files.write,
            max_read_bytes=cfg.files.max_read_bytes,
            max_write_bytes=cfg.files.max_write_bytes,
        )
    if cfg.http is not None:
        from .stdlib import http

        secrets = {
            host: {k: _secret(v) for k, v in headers.items()}
            for host, headers in cfg.http.secrets.items()
        }
        bindings += http.bindings(
            allow_hosts=cfg.http.allow_hosts,
            secrets=secrets,
            timeout_s=cfg.http.timeout_s,
            max_response_bytes=cfg.http.max_response_bytes,
            allow_private=cfg.http.allow_private,
        )
    if cfg.sql is not None:
        from .stdlib import sql

        bindings += sql.bindings(rel(cfg.sql.database), max_rows=cfg.sql.max_rows)
    audit = None
    if cfg.audit is not None:
        audit = AuditLog(rel(cfg.audit.path), include_args=cfg.audit.include_args)
    policy = Policy(**policy_kwargs, approve=approve)
    return {"limits": limits, "policy": policy, "bindings": bindings, "audit": audit}
