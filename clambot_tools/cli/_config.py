"""sandbox.toml: limits, policy, standard bindings, audit, rollout and manifest for `clambot`.

[limits]                  # any field of Limits
timeout_s = 2
memory_mb = 64

[policy]                  # any field of Policy but approve (the CLI asks on the terminal)
deny_effects = ["network"]

[files]                   # clambot_tools.stdlib.files.bindings
root = "./data"           # relative paths are relative to the config file
write = false

[http]                    # clambot_tools.stdlib.http.bindings
allow_hosts = ["api.example.com"]
# verify = "corp-ca.pem"    # a CA bundle to trust instead of the default ones
[http.secrets."api.example.com"]
Authorization = { env = "API_TOKEN", prefix = "Bearer " }   # never in the file itself

[sql]                     # clambot_tools.stdlib.sql.bindings
database = "app.db"

[audit]
path = "audit.jsonl"
include_args = false

[rollout]                 # what `clambot report --check` holds a canary to
max_error_rate = 0.02
min_runs = 100
max_p95_ms = 2000

[scripts]                 # the saved-script library of `clambot scripts`
path = "scripts"          # a directory (the default), or: database = "scripts.db"

[manifest]                # the binding manifest runs must match (`clambot manifest`)
path = "bindings.lock"    # default: bindings.lock beside this file, enforced if it exists
public_key = "base64 of a raw Ed25519 public key, or PEM"   # then it must be signed

[mcp.weather]             # an MCP server whose tools become bindings (clambot_tools.mcp)
command = "python"        # stdio: command, args, env, cwd (default: this file's directory)
args = ["weather_server.py"]
[mcp.github]              # or streamable HTTP: url, headers
url = "https://api.example.com/mcp"
headers.Authorization = { env = "GITHUB_TOKEN", prefix = "Bearer " }

A key left out is not set: the object it configures (Limits, Policy, the stdlib
factory, the report's Thresholds) uses its own default, so defaults live in one place.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._bindings import Binding, Effect
from .._errors import ConfigError
from .._manifest import LOCK_NAME, Manifest
from .._policy import Approver
from ..mcp import EnvSecret, MCPServerConfig, load_mcp_config

if TYPE_CHECKING:
    from ..mcp import MCPConnection


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def given(self, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The keys the file sets (None means not set), as keyword arguments."""
        return {
            k: getattr(self, k)
            for k in type(self).model_fields
            if k not in skip and getattr(self, k) is not None
        }


class LimitsSection(_Section):
    timeout_s: float | None = None
    memory_mb: int | None = None
    stack_kb: int | None = None
    max_log_bytes: int | None = None
    max_result_bytes: int | None = None
    fuel: int | None = None
    max_concurrent_calls: int | None = None


class PolicySection(_Section):
    allow: list[str] | None = None
    deny_effects: list[Effect] | None = None
    max_calls: int | None = None
    approve_effects: list[Effect] | None = None
    auto_approve: list[Effect] | None = None
    retry_attempts: int | None = None
    retry_backoff_s: float | None = None
    retry_max_backoff_s: float | None = None


class FilesSection(_Section):
    root: str
    write: bool | None = None
    max_read_bytes: int | None = None
    max_write_bytes: int | None = None
    max_entries: int | None = None
    prefix: str | None = None


class HttpSection(_Section):
    allow_hosts: list[str]
    #: a header's value, or where it comes from: ``{ env = "NAME", prefix = "Bearer " }``
    secrets: dict[str, dict[str, str | EnvSecret]] | None = None
    timeout_s: float | None = None
    max_response_bytes: int | None = None
    max_redirects: int | None = None
    allow_private: bool | None = None
    prefix: str | None = None
    #: a CA bundle (PEM file) servers are verified with, instead of the default ones
    verify: str | None = None


class SqlSection(_Section):
    database: str
    max_rows: int | None = None
    max_result_bytes: int | None = None
    timeout_s: float | None = None
    prefix: str | None = None


class AuditSection(_Section):
    path: str
    include_args: bool | None = None


class RolloutSection(_Section):
    max_error_rate: float | None = None
    min_runs: int | None = None
    max_p95_ms: float | None = None


class ManifestSection(_Section):
    path: str | None = None
    public_key: str | list[str] | None = None
    public_key_file: str | list[str] | None = None


class ScriptsSection(_Section):
    path: str | None = None
    database: str | None = None


class SandboxConfig(_Section):
    """The whole file. Unknown sections or keys are errors (a typo must not pass)."""

    limits: LimitsSection = Field(default_factory=LimitsSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    files: FilesSection | None = None
    http: HttpSection | None = None
    sql: SqlSection | None = None
    audit: AuditSection | None = None
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    manifest: ManifestSection | None = None
    #: MCP servers by name, as MCP clients list them (checked by `load_mcp_config`)
    mcp: dict[str, Any] | None = None
    scripts: ScriptsSection | None = None


class Config:
    """A loaded sandbox.toml: its sections, its MCP servers, and the directory its paths
    are relative to. `close` ends the MCP connections `build_bindings` made."""

    def __init__(self, sections: SandboxConfig, path: Path) -> None:
        self.sections = sections
        self.path = path
        self.base = path.resolve().parent
        #: the ``[mcp.NAME]`` servers as written (a relative ``cwd`` not resolved yet)
        self.mcp_servers: dict[str, MCPServerConfig] = {}
        self.connections: list[MCPConnection] = []

    def close(self) -> None:
        """Close the MCP connections made for this config (their servers exit)."""
        while self.connections:
            self.connections.pop().close()

    def rel(self, p: str) -> Path:
        """A path of the file, relative to the file's directory unless absolute."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.base / q


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a sandbox.toml.

    Raises ConfigError with every problem found (file, TOML syntax, unknown keys, types).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        sections = SandboxConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{p}: {problems}") from None
    cfg = Config(sections, p)
    if sections.mcp is not None:
        try:
            cfg.mcp_servers = load_mcp_config(sections.mcp)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    return cfg


def _secret(value: str | EnvSecret) -> str:
    return value if isinstance(value, str) else value.resolve()


def _secret_origin(value: str | EnvSecret) -> Any:
    """What the manifest records of a secret: where it comes from, never its value."""
    return "<written in the config>" if isinstance(value, str) else value.reference()


def _stdlib(
    factory: Callable[..., list[Binding]], name: str, kwargs: dict[str, Any], shown: dict[str, Any]
) -> list[Binding]:
    """Bindings from a stdlib factory, each with its origin: the factory and every option
    in effect (the file's, else the factory's own default), with `shown` in place of
    what the file wrote differently (paths as written, relative to the config; secrets
    by reference), so a lock made here holds on another machine."""
    made = factory(**kwargs)
    bound = inspect.signature(factory).bind_partial(**kwargs)
    bound.apply_defaults()
    origin = {"stdlib": name, **bound.arguments, **shown}
    return [replace(b, origin=origin) for b in made]


def build_bindings(cfg: Config, max_result_bytes: int | None = None) -> list[Binding]:
    """The bindings the config grants (standard ones, then the MCP servers' tools),
    each with its origin. MCP servers are connected here (all at once) and stay
    connected until ``cfg.close()``; `max_result_bytes` sizes their message cap.

    Raises ConfigError for invalid values or a missing secret, MCPConnectionError for
    a server that cannot be reached; ImportError if the http section is used without
    httpx, or an MCP server without the mcp package.
    """
    s = cfg.sections
    bindings: list[Binding] = []
    if s.files is not None:
        from ..stdlib import files

        kwargs = {**s.files.given(skip=("root",)), "root": cfg.rel(s.files.root)}
        bindings += _stdlib(files.bindings, "files", kwargs, {"root": s.files.root})
    if s.http is not None:
        from ..stdlib import http

        secrets = s.http.secrets or {}
        real = {h: {k: _secret(v) for k, v in hs.items()} for h, hs in secrets.items()}
        shown = {h: {k: _secret_origin(v) for k, v in hs.items()} for h, hs in secrets.items()}
        kwargs = {**s.http.given(skip=("secrets", "verify")), "secrets": real}
        if s.http.verify is not None:
            kwargs["verify"] = _ca_context(cfg.rel(s.http.verify))
        bindings += _stdlib(http.bindings, "http", kwargs, {"secrets": shown})
    if s.sql is not None:
        from ..stdlib import sql

        kwargs = {**s.sql.given(skip=("database",)), "db_path": cfg.rel(s.sql.database)}
        bindings += _stdlib(sql.bindings, "sql", kwargs, {"db_path": s.sql.database})
    if cfg.mcp_servers:
        bindings += _mcp(cfg, max_result_bytes)
    return bindings


def require_mcp(what: str) -> None:
    """Raise ConfigError saying how to install the MCP SDK, if it cannot be imported."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs the MCP SDK: pip install 'clambot-tools[mcp]'") from None


def _mcp(cfg: Config, max_result_bytes: int | None) -> list[Binding]:
    """The tools of the config's MCP servers as bindings, each recording its server's
    configuration as written (paths relative to the config, secrets by reference)."""
    from ..mcp import MCPConnection

    require_mcp(f"[mcp.{next(iter(cfg.mcp_servers))}]")
    conns: list[tuple[str, MCPConnection]] = []
    for name, written in cfg.mcp_servers.items():
        update: dict[str, Any] = {}
        if written.command is not None:  # relative paths are relative to the config
            update["cwd"] = str(cfg.rel(written.cwd) if written.cwd else cfg.base)
        if max_result_bytes is not None and "max_message_bytes" not in written.model_fields_set:
            update["max_message_bytes"] = max(1024, 4 * max_result_bytes)
        conn = MCPConnection(written.model_copy(update=update), name=name)
        cfg.connections.append(conn)
        conns.append((name, conn))
    # each server takes a while to start (a process, a handshake): start them together
    with ThreadPoolExecutor(len(conns), thread_name_prefix="clambot-mcp-connect") as pool:
        made = list(pool.map(lambda c: c[1].bindings(), conns))
    bindings: list[Binding] = []
    for name, granted in zip(cfg.mcp_servers, made, strict=True):
        server = {"mcp": name, **cfg.mcp_servers[name].recorded()}
        for b in granted:
            tool = (b.origin or {}).get("tool", b.name)
            bindings.append(replace(b, origin={**server, "tool": tool}))
    return bindings


def _ca_context(path: Path) -> Any:
    """A TLS context that trusts the CA bundle at `path`.

    Raises ConfigError if it cannot be read."""
    import ssl

    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[http] verify: cannot load the CA bundle {path}: {exc}") from None


def build(cfg: Config, approve: Approver | None = None) -> dict[str, Any]:
    """Keyword arguments for Sandbox (limits, policy, bindings, audit, manifest) from a
    config; `approve` becomes the policy's approver for write bindings.

    Raises ConfigError for invalid values or a missing secret.
    """
    from .._audit import AuditLog
    from .._limits import Limits
    from .._policy import Policy

    s = cfg.sections
    audit = None
    if s.audit is not None:
        audit = AuditLog(cfg.rel(s.audit.path), **s.audit.given(skip=("path",)))
    limits = Limits(**s.limits.given())
    return {
        "limits": limits,
        "policy": Policy(**s.policy.given(), approve=approve),
        "bindings": build_bindings(cfg, limits.max_result_bytes),
        "audit": audit,
        "manifest": manifest_of(cfg),
    }


def lock_path(cfg: Config) -> Path:
    """Where the config's binding manifest is: ``[manifest] path``, else bindings.lock
    beside the config."""
    m = cfg.sections.manifest
    return cfg.rel(m.path) if m is not None and m.path is not None else cfg.base / LOCK_NAME


def _listed(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def public_keys(cfg: Config) -> list[str]:
    """The manifest public keys the config gives (inline, or in files it names)."""
    m = cfg.sections.manifest
    if m is None:
        return []
    keys = _listed(m.public_key)
    for f in _listed(m.public_key_file):
        try:
            keys.append(cfg.rel(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg.rel(f)}: cannot read the public key: {exc}") from None
    return keys


def manifest_of(cfg: Config) -> Manifest | None:
    """The manifest runs must match: the one a ``[manifest]`` section names (it must
    exist), else bindings.lock beside the config when there is one, else None."""
    path = lock_path(cfg)
    if cfg.sections.manifest is None and not path.exists():
        return None
    return Manifest(path, public_keys=public_keys(cfg))
