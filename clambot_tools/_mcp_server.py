"""The sandbox as an MCP server: one tool, ``run_js_sandboxed``, on the MCP SDK's
low-level server (``clambot mcp`` serves it over stdio or streamable HTTP).

* **The tool.** Its input is ``{"code": "<JavaScript>"}``; its description says what
  the language and the limits are and carries the TypeScript declaration of the granted
  bindings (standard ones, and the tools of MCP servers this one fronts). A call runs
  the script and answers with the RunResult as ``structuredContent`` and a text
  rendering for the model; a script that failed is an ``isError`` result.
* **Approvals.** A call that needs approval (a ``write``, by default) is put to the
  client's user through MCP elicitation, bound to the ``tools/call`` request that runs
  the script. A client that cannot elicit (it did not declare the capability, or it
  speaks the 2026-07-28 protocol, where a server may not send requests) gets no
  approver: such calls are refused, and the description says so. An answer counts only
  while its run lasts; one that comes later approves nothing (the core records the
  call as ``expired``).
* **Sessions** (optional): the JavaScript globals of one MCP session (a stdio
  connection, or a streamable HTTP session) are kept from one call to the next, and
  freed when the MCP session ends. Without them, or on a connection without a session
  (stateless 2026-07-28 requests over HTTP), every call starts fresh.

Every run is the core's: limits, policy, audit and cancellation apply unchanged (a
client that cancels its ``tools/call`` stops the script).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _jsonsafe
from ._audit import AuditLog
from ._bindings import Binding
from ._limits import Limits
from ._policy import Approval, ApprovalRequest, Policy
from ._result import RunResult
from ._sandbox import Sandbox
from ._session import Session
from ._text import json_text, visible

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server import Server, ServerRequestContext

__all__ = ["TOOL_NAME", "SandboxServer"]

TOOL_NAME = "run_js_sandboxed"
#: arguments longer than this (as JSON) are refused without asking: nobody can review them
MAX_QUESTION_ARGS_CHARS = 20_000
#: how long past its run's deadline an approval question waits for its answer, so that
#: an answer that arrives just too late is recorded as such (``expired``)
_LATE_ANSWER_S = 1.0
#: deeper values cross as JSON text (MCP's JSON parsers on both sides stop near 200
#: levels, and pydantic's encoder near 255)
_MAX_STRUCTURED_DEPTH = 100

_ABOUT = (
    "Run a JavaScript program in a sandbox; get its last expression's value (as JSON) "
    "and console output. Write plain JavaScript, not Python, not TypeScript: no type "
    "annotations, no import/require, no top-level `return` (end with the value, e.g. "
    "`({{count, items}})`). Top-level `await` works. {memory_rule} No network, files or "
    "environment{outside}. Limits: {timeout:g} s per run (tool calls included), "
    "{memory} MiB."
)
_FRESH = "Each run starts fresh."
_KEPT = (
    "Top-level declarations and globals are kept from one call of this tool to the next "
    "in this session: reuse them; assign, never redeclare, a kept name. A failed "
    "script changes nothing: send the fixed script whole."
)
_TOOLS = (
    "Call tools as `await tools.name({{...}})` with one object of named arguments; run "
    "independent calls together with `Promise.all`; a failed call throws an Error you can "
    "catch. `tools` is declared in TypeScript notation; write JavaScript.\n\n{declaration}"
)

_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "description": "The JavaScript program; its last expression is the result.",
        }
    },
    "required": ["code"],
    "additionalProperties": False,
}
_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "value": {"description": "the JSON value of the script's last expression"},
        "value_json": {
            "type": "string",
            "description": f"the value as JSON text, when nested over {_MAX_STRUCTURED_DEPTH} "
            "levels deep (value is then null)",
        },
        "logs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"level": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "error": {
            "type": ["object", "null"],
            "properties": {
                "kind": {"type": "string"},
                "name": {"type": "string"},
                "message": {"type": "string"},
                "line": {"type": ["integer", "null"]},
                "column": {"type": ["integer", "null"]},
            },
        },
        "stats": {"type": "object"},
    },
    "required": ["ok"],
}
_APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "allow": {
            "type": "boolean",
            "title": "Allow this call",
            "description": "Allow this one call of the tool, with these arguments",
            "default": False,
        }
    },
    "required": ["allow"],
}


# -- what the model reads: kept here, in one place, so it can follow clambot_tools.render


def model_text(res: RunResult, code: str) -> str:
    """The text content of a ``run_js_sandboxed`` result: what a model reads."""
    from ._display import run_result_text

    return run_result_text(res, code)


def describe(sb: Sandbox, *, kept: bool) -> str:
    """The tool's description over `sb`: the language, the limits, what is kept between
    calls (`kept`), then the TypeScript declaration of the tools a script can call."""
    declaration = sb.describe_tools() if sb.bindings else ""
    text = _ABOUT.format(
        outside=" but the tools below" if declaration else "",
        timeout=sb.limits.timeout_s,
        memory=sb.limits.memory_mb,
        memory_rule=_KEPT if kept else _FRESH,
    )
    if declaration:
        text += "\n" + _TOOLS.format(declaration=declaration)
    return text


def structured(res: RunResult) -> dict[str, Any]:
    """The RunResult as the result's ``structuredContent``: JSON that encodes and that
    MCP's parsers accept (NaN and the infinities as null, lone surrogates as U+FFFD; a
    value nested too deeply for them comes as its JSON text, ``value_json``)."""
    data: dict[str, Any] = {
        "ok": res.ok,
        "value": res.value,
        "logs": [{"level": e.level, "message": e.message} for e in res.logs],
        "error": res.error.model_dump() if res.error is not None else None,
        "stats": res.stats.model_dump(exclude_none=True),
    }
    if _deeper_than(res.value, _MAX_STRUCTURED_DEPTH):
        data["value"] = None
        data["value_json"] = json_text(res.value, indent=None)[0]
    text, _ = json_text(data, indent=None)
    safe: dict[str, Any] = _jsonsafe.loads(text)
    return safe


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` (JSON data) nests more than `limit` containers deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth + 1 > limit:
            return True
        stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def tool_result(res: RunResult, code: str) -> types.CallToolResult:
    """The ``tools/call`` result of a run: text for the model, the RunResult as
    structured content, ``isError`` when the script failed."""
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=model_text(res, code))],
        structured_content=structured(res),
        is_error=not res.ok,
    )


def _refusal(message: str) -> types.CallToolResult:
    """A ``tools/call`` that ran nothing (a bad request): an isError result saying why."""
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], is_error=True
    )


# -- approvals through elicitation


def can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client can be asked a question (form elicitation) now:
    it declared the capability, speaks a handshake-era protocol (2026-07-28 forbids
    server requests) and the request has a channel to send it on."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return False
    caps = ctx.session.client_capabilities
    if caps is None or caps.elicitation is None:
        return False
    # an empty elicitation capability (2025-06-18) means form mode
    if caps.elicitation.form is None and caps.elicitation.url is not None:
        return False
    return ctx.session.can_send_request


def question(req: ApprovalRequest) -> str | None:
    """The text put to the user for `req`, or None when the arguments are too long to
    review. Everything from the script is shown inert (escapes, not control codes)."""
    args, _ = json_text(dict(req.args))
    if len(args) > MAX_QUESTION_ARGS_CHARS:
        return None
    about = visible(req.description, keep_newlines=False)
    about = f" ({about[:300]}{'…' if len(about) > 300 else ''})" if about else ""
    effects = ", ".join(req.effects)
    return (
        f"A script wants to call tools.{visible(req.binding)} [{effects}]{about} "
        f"with the arguments:\n{args}\nAllow this one call?"
    )


class Asker:
    """The approver of one run (or of one session's runs, one at a time): asks the
    client of the ``tools/call`` that runs the script, through elicitation.

    It is called on one of the package's threads (approvers may block there) and waits
    for the answer on the server's event loop, at most until the run's deadline (plus
    a moment, so an answer that arrives just too late is recorded as ``expired``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self._ctx: ServerRequestContext[Any, Any] | None = None
        self._deadline = 0.0

    def begin(self, ctx: ServerRequestContext[Any, Any], timeout_s: float) -> None:
        """A run of `timeout_s` seconds starts for the request `ctx`."""
        self._ctx = ctx
        self._deadline = time.monotonic() + timeout_s

    def __call__(self, req: ApprovalRequest) -> Approval:
        ctx, deadline = self._ctx, self._deadline
        if ctx is None or threading.get_ident() == self._loop_thread:
            return Approval.DENY  # never block the loop that must carry the answer
        text = question(req)
        if text is None:
            return Approval.DENY
        window = deadline + _LATE_ANSWER_S - time.monotonic()
        if window <= 0:
            return Approval.DENY
        pending = asyncio.run_coroutine_threadsafe(_elicit(ctx, text), self._loop)
        try:
            answer = pending.result(timeout=window)
        except cf.TimeoutError:
            pending.cancel()  # the client is told the question is withdrawn
            return Approval.DENY
        allowed = answer.action == "accept" and (answer.content or {}).get("allow") is True
        return Approval.ALLOW_ONCE if allowed else Approval.DENY


async def _elicit(ctx: ServerRequestContext[Any, Any], text: str) -> types.ElicitResult:
    return await ctx.session.elicit_form(text, _APPROVAL_SCHEMA, related_request_id=ctx.request_id)


# -- sessions


class _Kept:
    """One MCP session's JavaScript session, its approver, and the lock that lets one
    of its calls run at a time."""

    def __init__(self, session: Session, asker: Asker | None) -> None:
        self.session = session
        self.asker = asker
        self.lock = asyncio.Lock()

    async def aclose(self) -> None:
        async with self.lock:  # no run of it is in progress: closing does not block
            self.session.close()


#: where a connection's `_Kept` lives in its ``state``
_STATE_KEY = "clambot_tools.session"


def _connection(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The SDK's Connection of this request (its ``state`` and ``exit_stack`` live as
    long as the MCP session), or None. The SDK keeps it on the per-request session
    without a public accessor (mcp 2.3)."""
    return getattr(ctx.session, "_connection", None)


def _has_session(ctx: ServerRequestContext[Any, Any], conn: Any) -> bool:
    """Whether the request belongs to a connection that lasts: stdio (no HTTP request),
    or a streamable HTTP session (with an id)."""
    if conn is None:
        return False
    return ctx.request is None or getattr(conn, "session_id", None) is not None


# -- the server


class SandboxServer:
    """Serves ``run_js_sandboxed`` over MCP for scripts granted `bindings`.

    Args:
        bindings, limits, policy, audit: as for `Sandbox` (the policy's ``approve`` is
            ignored: approvals go to the client, through elicitation).
        sessions: keep each MCP session's JavaScript globals between its calls.
        name: the server's name in the MCP handshake.

    ``server`` is the MCP SDK's low-level ``Server``; run it over any transport.
    """

    def __init__(
        self,
        *,
        bindings: Sequence[Binding] = (),
        limits: Limits | None = None,
        policy: Policy | None = None,
        audit: AuditLog | None = None,
        sessions: bool = False,
        name: str = "clambot",
    ) -> None:
        from mcp.server import Server

        from ._mcp_link import _version

        self.limits = limits if limits is not None else Limits()
        self.policy = dataclasses.replace(policy or Policy(), approve=None)
        self.audit = audit
        self.sessions = sessions
        self._bindings = tuple(bindings)
        # the same bindings with and without an approver, for the two descriptions
        self._plain = self._sandbox(None)
        self._asking = self._sandbox(lambda req: Approval.DENY)
        self._descriptions: dict[tuple[bool, bool], str] = {}
        self.server: Server[Any] = Server(
            name,
            version=_version(),
            instructions=(
                f"{TOOL_NAME} runs JavaScript in a sandbox; the program calls the tools "
                "declared in its description as `await tools.name({...})`."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )

    def _sandbox(self, approve: Any) -> Sandbox:
        return Sandbox(
            bindings=self._bindings,
            limits=self.limits,
            policy=dataclasses.replace(self.policy, approve=approve),
            audit=self.audit,
        )

    def tool(self, *, asks: bool, kept: bool) -> types.Tool:
        """The tool as listed to a client that can be asked for approvals (`asks`) on a
        connection whose state is kept between calls (`kept`)."""
        import mcp_types as types

        key = (asks, kept)
        if key not in self._descriptions:
            self._descriptions[key] = describe(self._asking if asks else self._plain, kept=kept)
        effects = {e for b in self._bindings for e in b.effects}
        return types.Tool(
            name=TOOL_NAME,
            title="Run JavaScript in a sandbox",
            description=self._descriptions[key],
            input_schema=_INPUT_SCHEMA,
            output_schema=_OUTPUT_SCHEMA,
            annotations=types.ToolAnnotations(
                read_only_hint="write" not in effects,
                destructive_hint="write" in effects,
                idempotent_hint=False,
                open_world_hint="network" in effects,
            ),
        )

    def _kept(self, ctx: ServerRequestContext[Any, Any]) -> bool:
        return self.sessions and _has_session(ctx, _connection(ctx))

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        import mcp_types as types

        return types.ListToolsResult(tools=[self.tool(asks=can_elicit(ctx), kept=self._kept(ctx))])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != TOOL_NAME:
            return _refusal(f"there is no tool {params.name!r}; the only tool is {TOOL_NAME}")
        args = params.arguments or {}
        code = args.get("code")
        if not isinstance(code, str) or set(args) - {"code"}:
            return _refusal(
                f"{TOOL_NAME} takes one argument, code: the JavaScript program as a string"
            )
        conn = _connection(ctx)
        if self.sessions and _has_session(ctx, conn):
            kept = self._kept_session(ctx, conn)
            async with kept.lock:
                if kept.asker is not None:
                    kept.asker.begin(ctx, self.limits.timeout_s)
                res = await kept.session.arun(code)
        else:
            asker = Asker(asyncio.get_running_loop()) if can_elicit(ctx) else None
            if asker is not None:
                asker.begin(ctx, self.limits.timeout_s)
            res = await self._sandbox(asker).arun(code)
        return tool_result(res, code)

    def _kept_session(self, ctx: ServerRequestContext[Any, Any], conn: Any) -> _Kept:
        """The JavaScript session of this request's MCP session, made on its first call
        and closed when the MCP session ends."""
        kept: _Kept | None = conn.state.get(_STATE_KEY)
        if kept is None:
            asker = Asker(asyncio.get_running_loop()) if can_elicit(ctx) else None
            kept = _Kept(self._sandbox(asker).session(), asker)
            conn.state[_STATE_KEY] = kept
            conn.exit_stack.push_async_callback(kept.aclose)
        return kept
