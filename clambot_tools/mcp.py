"""MCP servers' tools as bindings (``pip install clambot-tools[mcp]``).

Connect to an MCP server, over stdio (a command) or streamable HTTP (a URL), and grant
its tools to scripts, named as the server names them::

    from clambot_tools import Policy, Sandbox
    from clambot_tools.mcp import MCPConnection

    with MCPConnection(command="python", args=["weather_server.py"]) as server:
        sb = Sandbox(bindings=server.bindings(), policy=Policy(approve=ask_a_human))
        sb.run("(await tools.forecast({city: 'Paris'})).temp_c")

* A tool's ``inputSchema`` validates the script's arguments (strictly, before anything
  reaches the server); its ``outputSchema``, when it has one, is the result type in
  ``Sandbox.describe_tools()``.
* The script gets the call's ``structuredContent`` when the server sends one, else its
  text content (a string). A result with ``isError`` rejects the call with the
  server's message, as do protocol errors.
* Effects come from the tool's annotations: ``readOnlyHint`` means ``read``; anything
  else (``destructiveHint``, or no hint) means ``write``, so it needs approval (or
  ``Policy(auto_approve=("write",))``); ``openWorldHint: true`` adds ``network``. The
  hints come from the server: ``bindings(effects={...})`` overrides them per tool.
* Policy, audit, call caps, the run's deadline and cancellation apply as to any
  binding: when a run ends (a timeout, say) its calls still in flight are cancelled
  and the server is told (``notifications/cancelled``).
* One message from the server is capped at ``max_message_bytes`` before it is read
  into memory; a larger answer fails its call at once. A server that hangs is bounded
  by the run's deadline; one that exits or breaks the connection fails the calls in
  flight, and the next call reconnects (with backoff). A read-only tool's call that
  lost its connection is retried as the policy's ``retry_*`` say.

The session lives as long as the `MCPConnection` (and so as long as a Sandbox that
holds its bindings), or for the ``with`` / ``async with`` block. Each connection owns
a private event loop on its own thread, where the MCP SDK's task groups live; calls
from ``Sandbox.run``, from ``Sandbox.arun`` on any event loop, or from plain threads
are handed to it and awaited, so no caller's loop ever holds the session (see
``clambot_tools._mcp_link``).

Servers can also be described as data, as MCP clients list them (``[mcp.NAME]`` tables
of a TOML file, the ``mcpServers`` object of a JSON one): `MCPServerConfig` and
`load_mcp_config`; secrets come from the environment as
``{env = "NAME", prefix = "Bearer "}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._bindings import EFFECTS, Binding, Effect, binding
from ._context import current_call
from ._errors import ClamBotError, ConfigError, TransientError

if TYPE_CHECKING:
    from ._limits import Limits
    from ._mcp_link import Link

__all__ = [
    "EnvSecret",
    "MCPConnection",
    "MCPConnectionError",
    "MCPServerConfig",
    "MCPToolError",
    "load_mcp_config",
    "mcp_bindings",
]

#: one message from a server, by default: 4x the default result cap, because servers
#: often send a structured result twice (as structuredContent and as JSON text)
DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
#: inside a run, a call's own timeout is the run's time left plus this: the run's
#: deadline, not the call's, is what ends it (and cancels the call)
_RUN_MARGIN_S = 1.0


class MCPConnectionError(ClamBotError):
    """Raised when an MCP server cannot be reached: it does not start or answer the
    handshake (after the retries), or the connection is closed. Inside a script, the
    call rejects with this message."""


class MCPToolError(ClamBotError):
    """Raised by `MCPConnection.call` when the server answered with an error: a result
    with ``isError`` (the message is the server's text), a protocol error, an answer
    over the size cap or not valid MCP. Inside a script, the call rejects with this
    message."""


# -- configuration as data


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvSecret(_Model):
    """A value taken from the environment when connecting: ``prefix`` + ``$env``
    (e.g. ``{env = "API_TOKEN", prefix = "Bearer "}``). The value itself is never in
    a config file, a repr or an error message."""

    env: str = Field(min_length=1)
    prefix: str = ""

    def resolve(self) -> str:
        """The value. Raises ConfigError if the variable is not set."""
        value = os.environ.get(self.env)
        if value is None:
            raise ConfigError(f"the environment variable {self.env} (a secret) is not set")
        return self.prefix + value

    def reference(self) -> dict[str, str]:
        """Where the value comes from, for records such as a binding manifest."""
        return self.model_dump(exclude_defaults=True)


class MCPServerConfig(_Model):
    """One MCP server, as MCP clients list them: a ``command`` (stdio) or a ``url``
    (streamable HTTP), and what to grant of it.

    Attributes:
        type: optional, as some clients write it: ``"stdio"`` or ``"http"`` (also
            ``"streamable-http"``, ``"streamableHttp"``); it must match the keys given.
        command: the program to run (stdio). Its ``args``, extra ``env`` (added to a
            minimal inherited environment: HOME, PATH, USER, ...) and ``cwd``.
        url: the streamable HTTP endpoint (``http`` or ``https``); ``headers`` are
            sent with every request.
        tools: names of the tools to grant (default: all the server lists).
        effects: effects per tool name, overriding those read from its annotations.
        prefix: put before every tool's name (e.g. ``"github_"``), for two servers
            that name tools alike.
        connect_timeout_s: most time for one connection attempt (start, handshake,
            tool list). connect_attempts: attempts per (re)connection.
        call_timeout_s: most time for a call made outside a script (inside one, the
            run's deadline decides).
        max_message_bytes: the largest message read from the server (default 4 MiB).
    """

    type: Literal["stdio", "http", "streamable-http", "streamableHttp"] | None = None
    command: str | None = Field(default=None, min_length=1)
    args: list[str] = []
    env: dict[str, str | EnvSecret] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str | EnvSecret] = {}
    tools: list[str] | None = None
    effects: dict[str, list[Effect]] = {}
    prefix: str = ""
    connect_timeout_s: float = Field(default=30.0, gt=0)
    connect_attempts: int = Field(default=3, ge=1)
    call_timeout_s: float = Field(default=60.0, gt=0)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (streamable HTTP)")
        if self.type is not None and (self.type == "stdio") != (self.command is not None):
            given = "command" if self.command is not None else "url"
            raise ValueError(f"type {self.type!r} does not match the {given} given")
        if self.url is not None:
            if self.args or self.env or self.cwd is not None:
                raise ValueError("args, env and cwd are for a command, not a url")
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must be an http(s) URL, not {self.url!r}")
        elif self.headers:
            raise ValueError("headers are for a url, not a command")
        return self

    def recorded(self) -> dict[str, Any]:
        """What a binding manifest records of this server: the keys that say which
        server it is and what is granted of it (those not at their defaults), with
        values of ``env`` and ``headers`` by reference only (an `EnvSecret`'s variable;
        a value written out as ``"<written in the config>"``, since it may be a secret)."""
        data = self.model_dump(exclude_defaults=True, exclude={*_TUNING, "env", "headers"})
        for key in ("env", "headers"):
            values: dict[str, str | EnvSecret] = getattr(self, key)
            if values:
                data[key] = {k: _reference(v) for k, v in sorted(values.items())}
        return data

    @property
    def label(self) -> str:
        """A short name for messages: the command line, or the URL's host and path."""
        if self.url is not None:
            parts = urllib.parse.urlsplit(self.url)
            return f"{parts.netloc}{parts.path}"
        assert self.command is not None
        words = [Path(self.command).name, *(Path(a).name for a in self.args[:1])]
        return shlex.join(words)[:80]


#: how a connection behaves, not which server it reaches: not part of its record
_TUNING = frozenset(
    {"connect_timeout_s", "connect_attempts", "call_timeout_s", "max_message_bytes"}
)


def _reference(v: str | EnvSecret) -> Any:
    return v.reference() if isinstance(v, EnvSecret) else "<written in the config>"


def load_mcp_config(
    table: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None
) -> dict[str, MCPServerConfig]:
    """The servers of an ``[mcp]`` TOML table (or a JSON ``mcpServers`` object): a
    mapping of names to tables with `MCPServerConfig`'s keys, e.g.::

        [mcp.weather]
        command = "python"
        args = ["weather_server.py"]

        [mcp.github]
        url = "https://api.example.com/mcp"
        headers.Authorization = { env = "GITHUB_TOKEN", prefix = "Bearer " }

    A relative ``cwd`` is taken relative to `base_dir` (the config file's directory).
    Secrets are not read here (`EnvSecret.resolve` does, when connecting).

    Raises ConfigError naming every problem (``mcp.github.url: ...``).
    """
    if not isinstance(table, Mapping):
        raise ConfigError("mcp: expected a table of servers ([mcp.NAME])")
    servers: dict[str, MCPServerConfig] = {}
    problems: list[str] = []
    for name, entry in table.items():
        if not isinstance(name, str) or not name:
            problems.append(f"mcp: invalid server name {name!r}")
            continue
        try:
            cfg = MCPServerConfig.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = ".".join(str(p) for p in ("mcp", name, *err["loc"]))
                problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
            continue
        if cfg.cwd is not None and base_dir is not None and not Path(cfg.cwd).is_absolute():
            cfg = cfg.model_copy(update={"cwd": str(Path(base_dir) / cfg.cwd)})
        servers[name] = cfg
    if problems:
        raise ConfigError("; ".join(problems))
    return servers


# -- results


def _text_of(content: Sequence[Any]) -> str:
    """A tool result's content blocks as one text (non-text blocks as a short note)."""
    parts: list[str] = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {res.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}]")
    return "\n".join(parts)


def _effects_of(tool: Any) -> tuple[Effect, ...]:
    hints = tool.annotations
    read_only = hints is not None and hints.read_only_hint is True
    effects: list[Effect] = ["read" if read_only else "write"]
    if hints is not None and hints.open_world_hint is True:
        effects.append("network")
    return tuple(effects)


# -- the connection


class MCPConnection:
    """A client session to one MCP server, whose tools become bindings.

    Give a command (stdio) or a URL (streamable HTTP), or an `MCPServerConfig`::

        MCPConnection(command="npx", args=["-y", "@acme/mcp-server"], env={...})
        MCPConnection(url="https://mcp.example.com/mcp", headers={"Authorization": ...})
        MCPConnection(config, name="github")

    Nothing starts until the first use: `bindings`, `call`, `connect`, or a ``with`` /
    ``async with`` block. The session then lives until `close` (the end of the block,
    or when the connection is garbage-collected: with the last Sandbox holding its
    bindings, say); a broken connection is re-established by the next call.

    Args:
        name: names the server in messages (default: its command line or URL).
        See `MCPServerConfig` for the others; ``headers`` and ``env`` values may be
        `EnvSecret` references.

    Raises:
        ConfigError: neither or both of `command` and `url`, or another invalid
            value, or a secret's environment variable is not set.
    """

    def __init__(
        self,
        config: MCPServerConfig | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        command: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str | EnvSecret] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        url: str | None = None,
        headers: Mapping[str, str | EnvSecret] | None = None,
        connect_timeout_s: float = 30.0,
        connect_attempts: int = 3,
        call_timeout_s: float = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if config is None:
            raw: Mapping[str, Any] = {
                "command": command,
                "args": list(args),
                "env": dict(env or {}),
                "cwd": os.fspath(cwd) if cwd is not None else None,
                "url": url,
                "headers": dict(headers or {}),
                "connect_timeout_s": connect_timeout_s,
                "connect_attempts": connect_attempts,
                "call_timeout_s": call_timeout_s,
                "max_message_bytes": max_message_bytes,
            }
        elif command is not None or url is not None:
            raise ConfigError("give a config or command/url, not both")
        else:
            raw = config if isinstance(config, Mapping) else config.model_dump()
        try:
            self.config = (
                config
                if isinstance(config, MCPServerConfig)
                else MCPServerConfig.model_validate(raw)
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors(include_url=False)
            )
            raise ConfigError(f"MCPConnection: {problems}") from None
        self.name = name or self.config.label
        self._opener = self._transport_factory()  # secrets resolved now: fail early
        self._link: Link | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"MCPConnection({self.name!r})"

    def _transport_factory(self) -> Any:
        """A function making a fresh transport per (re)connection, secrets resolved."""
        cfg = self.config
        cap = cfg.max_message_bytes
        label = repr(self.name)
        if cfg.url is not None:
            from ._mcp_transport import http_transport

            url = cfg.url
            headers = {k: _value(v) for k, v in cfg.headers.items()}
            return lambda: http_transport(url, headers, max_message_bytes=cap)
        from mcp.client.stdio import get_default_environment

        from ._mcp_transport import StdioTransport

        assert cfg.command is not None
        command, args, cwd = cfg.command, list(cfg.args), cfg.cwd
        env = get_default_environment() | {k: _value(v) for k, v in cfg.env.items()}
        return lambda: StdioTransport(
            command, args, env=env, cwd=cwd, max_message_bytes=cap, label=label
        )

    def _get_link(self) -> Link:
        if self._closed:
            raise MCPConnectionError(f"the connection to the MCP server {self.name} is closed")
        if self._link is None:
            from ._mcp_link import Link

            self._link = Link(
                repr(self.name),
                self._opener,
                connect_timeout_s=self.config.connect_timeout_s,
                connect_attempts=self.config.connect_attempts,
            )
            # the link must not refer back to self: then a dropped connection (and
            # the Sandbox whose bindings held it) is collected, and this closes it
            self._finalizer = weakref.finalize(self, self._link.close, wait=False)
        return self._link

    # -- connecting and closing

    def _connect_deadline(self) -> float:
        cfg = self.config
        return cfg.connect_timeout_s * cfg.connect_attempts + 2.0 * cfg.connect_attempts

    def connect(self) -> MCPConnection:
        """Connect now (if not connected yet) and list the server's tools; returns self.

        Raises MCPConnectionError if the server cannot be reached (after the retries).
        """
        link = self._get_link()
        budget = self._connect_deadline()
        self._blocking(link, self._aconnected(link, budget), budget + 5.0)
        return self

    async def aconnect(self) -> MCPConnection:
        """The async twin of `connect` (the caller's loop is never blocked)."""
        link = self._get_link()
        budget = self._connect_deadline()
        await self._awaiting(link, self._aconnected(link, budget))
        return self

    @staticmethod
    async def _aconnected(link: Link, budget: float) -> None:
        from ._mcp_link import ConnectFailedError, LinkClosedError

        try:
            await link.connected(asyncio.get_running_loop().time() + budget)
        except (ConnectFailedError, LinkClosedError) as exc:
            raise MCPConnectionError(str(exc)) from None

    def close(self) -> None:
        """Close the session; a stdio server is asked to exit (its stdin closed), then
        terminated. Blocks until done (a few seconds at most). Safe to call twice."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._link is not None:
            self._link.close(wait=True)

    async def aclose(self) -> None:
        """The async twin of `close`: the caller's loop waits without being blocked."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._link is not None:
            await asyncio.wrap_future(self._link.begin_close())

    def __enter__(self) -> MCPConnection:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> MCPConnection:
        return await self.aconnect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- what a user may look at

    @property
    def tools(self) -> list[Any]:
        """The server's tools (``mcp.types.Tool``) as listed when connecting; empty
        before the first connection."""
        return self._link.tools if self._link is not None else []

    @property
    def server_pid(self) -> int | None:
        """The process id of a stdio server while connected (None otherwise)."""
        return self._link.pid if self._link is not None else None

    @property
    def in_flight(self) -> int:
        """Calls to the server started and not finished yet."""
        return self._link.in_flight if self._link is not None else 0

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    # -- calls

    def bindings(
        self,
        *,
        tools: Iterable[str] | None = None,
        effects: Mapping[str, Sequence[Effect]] | None = None,
        prefix: str | None = None,
    ) -> list[Binding]:
        """The server's tools as bindings (connecting first if needed).

        Args:
            tools: the names to grant (default: the config's ``tools``, else all).
            effects: effects per tool name, overriding the annotations (and the
                config's ``effects``).
            prefix: put before each binding's name (default: the config's ``prefix``).

        Raises:
            MCPConnectionError: the server cannot be reached.
            ConfigError: `tools` or `effects` name a tool the server does not have, an
                effect is unknown, or a tool's ``inputSchema`` is not an object schema.
        """
        cfg = self.config
        self.connect()
        listed = {t.name: t for t in self.tools}
        wanted = list(tools) if tools is not None else cfg.tools
        overrides: dict[str, Sequence[Effect]] = {**cfg.effects, **(effects or {})}
        unknown = sorted(({*(wanted or ())} | set(overrides)) - set(listed))
        if unknown:
            raise ConfigError(
                f"the MCP server {self.name} has no tool(s) {unknown}; it has {sorted(listed)}"
            )
        pre = cfg.prefix if prefix is None else prefix
        chosen = [listed[n] for n in wanted] if wanted is not None else list(listed.values())
        return [self._binding(t, overrides.get(t.name), pre) for t in chosen]

    def _binding(self, tool: Any, effects: Sequence[Effect] | None, prefix: str) -> Binding:
        name: str = tool.name
        read_only = tool.annotations is not None and tool.annotations.read_only_hint is True

        async def call_mcp_tool(**arguments: Any) -> Any:
            try:
                return await self.acall(name, arguments)
            except _LostError as exc:
                # the connection broke mid-call: a read-only call is safe to repeat
                if read_only and (effects is None or "write" not in effects):
                    raise TransientError(str(exc)) from None
                raise MCPConnectionError(str(exc)) from None

        bad = [e for e in (effects or ()) if e not in EFFECTS]
        if bad:
            raise ConfigError(f"tool {name!r}: unknown effects {bad}; use {list(EFFECTS)}")
        desc = tool.description or (tool.annotations.title if tool.annotations else None) or ""
        try:
            made = binding(
                call_mcp_tool,
                name=prefix + name,
                description=desc,
                json_schema=tool.input_schema,
                result_schema=tool.output_schema or {"type": "string"},
                effects=tuple(effects) if effects is not None else _effects_of(tool),
            )
        except ConfigError as exc:
            raise ConfigError(f"the MCP server {self.name}: {exc}") from None
        # a manifest then notices a server that is reached or configured differently
        return dataclasses.replace(
            made, origin={"mcp": self.name, **self.config.recorded(), "tool": name}
        )

    async def acall(self, tool: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Call `tool` and return what a script would get: its ``structuredContent``
        when there is one, else its text. Usable from any event loop. Inside a
        binding, the call ends with the run (the server is told it was cancelled).

        Raises MCPToolError (the server answered with an error), MCPConnectionError.
        """
        link = self._get_link()
        ctx = current_call()
        timeout = ctx.remaining() + _RUN_MARGIN_S if ctx is not None else self.config.call_timeout_s
        fut = self._submit(link, _call_tool(link, tool, dict(arguments or {}), timeout))
        # the run's end reaches the call even when this coroutine's loop is busy
        unregister = ctx.on_cancel(fut.cancel) if ctx is not None else None
        try:
            return await asyncio.wrap_future(fut)
        finally:
            if unregister is not None:
                unregister()

    def call(self, tool: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """The blocking twin of `acall` (not from inside an event loop's thread if
        you can help it: it blocks that loop). Raises as `acall` does."""
        link = self._get_link()
        timeout = self.config.call_timeout_s
        return self._blocking(link, _call_tool(link, tool, dict(arguments or {}), timeout), None)

    def _submit(self, link: Link, coro: Any) -> Any:
        from ._mcp_link import LinkClosedError

        try:
            return link.submit(coro)
        except LinkClosedError as exc:
            raise MCPConnectionError(str(exc)) from None

    def _blocking(self, link: Link, coro: Any, timeout: float | None) -> Any:
        from ._mcp_link import LinkClosedError

        try:
            return link.wait(coro, timeout)
        except LinkClosedError as exc:
            raise MCPConnectionError(str(exc)) from None

    async def _awaiting(self, link: Link, coro: Any) -> Any:
        return await asyncio.wrap_future(self._submit(link, coro))


class _LostError(MCPConnectionError):
    """The connection broke during the call (it may have acted)."""


async def _call_tool(link: Link, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
    """On the link's loop: call `tool`, turn its result into the script's value and
    every failure into MCPToolError or MCPConnectionError with a message for the script."""
    from mcp.shared.exceptions import MCPError
    from pydantic import ValidationError as PydanticValidationError

    from ._mcp_link import ConnectFailedError, ConnectionLostError, LinkClosedError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def run(client: Any) -> Any:
        left = max(0.001, deadline - loop.time())
        return await client.call_tool(tool, arguments, read_timeout_seconds=left)

    try:
        result = await link.call(run, deadline)
    except ConnectionLostError as exc:
        raise _LostError(str(exc)) from None
    except (ConnectFailedError, LinkClosedError) as exc:
        raise MCPConnectionError(str(exc)) from None
    except MCPError as exc:
        raise MCPToolError(_protocol_error(link.label, tool, exc)) from None
    except PydanticValidationError as exc:
        raise MCPToolError(
            f"the MCP server {link.label} sent an invalid result for {tool} "
            f"({exc.error_count()} problem(s), e.g. {exc.errors()[0]['msg']})"
        ) from None
    except RuntimeError as exc:  # the SDK's check of structuredContent vs outputSchema
        raise MCPToolError(str(exc)) from None
    if result.is_error:
        raise MCPToolError(_text_of(result.content) or f"the tool {tool} failed")
    if result.structured_content is not None:
        return result.structured_content
    return _text_of(result.content)


def _protocol_error(label: str, tool: str, exc: Any) -> str:
    from mcp_types import REQUEST_TIMEOUT

    if exc.error.code == REQUEST_TIMEOUT:
        return f"the MCP server {label} did not answer the call of {tool} in time"
    return str(exc.error.message) or f"the MCP server {label} refused the call of {tool}"


def _value(v: str | EnvSecret) -> str:
    return v.resolve() if isinstance(v, EnvSecret) else v


#: what ``mcp_bindings`` takes: connections and configs, names mapped to configs, or one
#: server's config on its own
MCPServers = (
    Iterable["MCPConnection | MCPServerConfig | Mapping[str, Any]"]
    | Mapping[str, "MCPServerConfig | Mapping[str, Any]"]
    | Mapping[str, Any]
)


def mcp_bindings(servers: MCPServers, *, limits: Limits | None = None) -> list[Binding]:
    """The bindings of several MCP servers, for frameworks' ``mcp=[...]`` parameters.

    `servers` is a list whose items are ready `MCPConnection` objects (used as they
    are), `MCPServerConfig` objects or mappings of their keys; or a mapping of names to
    configs (what `load_mcp_config` returns, or a JSON client config's ``mcpServers``);
    or one server's config on its own.
    A connection is made for each config; with `limits`, its message cap is 4x
    ``limits.max_result_bytes``. The connections live as long as the bindings.

    Raises ConfigError for an invalid item, MCPConnectionError for a server that
    cannot be reached.
    """
    named: list[tuple[str | None, Any]]
    if isinstance(servers, Mapping):
        # one server's config, or names -> configs
        one = _looks_like_one_server(servers)
        named = [(None, servers)] if one else list(servers.items())
    else:
        named = [(None, item) for item in servers]
    out: list[Binding] = []
    for name, item in named:
        if isinstance(item, MCPConnection):
            conn = item
        elif isinstance(item, (MCPServerConfig, Mapping)):
            raw = item.model_dump() if isinstance(item, MCPServerConfig) else dict(item)
            if limits is not None and "max_message_bytes" not in (
                item.model_fields_set if isinstance(item, MCPServerConfig) else raw
            ):
                raw["max_message_bytes"] = max(1024, 4 * limits.max_result_bytes)
            conn = MCPConnection(raw, name=name)
        else:
            raise ConfigError(
                "mcp= takes MCPConnection objects, MCPServerConfig objects or mappings "
                f"with their keys, not {type(item).__name__}"
            )
        out += conn.bindings()
    return out


def _looks_like_one_server(m: Mapping[str, Any]) -> bool:
    return "command" in m or "url" in m
