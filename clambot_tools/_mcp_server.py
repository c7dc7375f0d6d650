"""The sandbox as an MCP server: one tool, ``run_js_sandboxed``, on the MCP SDK's
low-level server (``clambot mcp`` serves it over stdio or streamable HTTP).

* **The tool.** Its input is ``{"code": "<JavaScript>"}`` (markdown fences around it
  are stripped); its description (``render.tool_description``) says what the language
  and the limits are and carries the TypeScript declaration of the granted bindings
  (standard ones, and the tools of MCP servers this one fronts). A call runs the script
  and answers with the RunResult as ``structuredContent`` and the text a model reads
  (``render.model_text``); a script that failed is an ``isError`` result.
* **Approvals.** A call that needs approval (a ``write``, by default) is put to the
  client's user through MCP elicitation, on the ``tools/call`` that runs the script
  (see ``_mcp_approval``: a request in the 2025 protocols, ``InputRequiredResult``
  rounds in 2026-07-28). A client that declared no elicitation gets no approver: such
  calls are refused, and the description says so. An answer counts only while its run
  lasts; one that comes later approves nothing (the core records it ``expired``).
* **Sessions** (optional): the JavaScript globals of one MCP session (a stdio
  connection, or a streamable HTTP session) are kept from one call to the next, and
  freed when the MCP session ends. Without them, or on a connection without a session
  (stateless 2026-07-28 requests over HTTP), every call starts fresh.

Every run is the core's: limits, policy, audit and cancellation apply unchanged (a
client that cancels its ``tools/call`` stops the script).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _jsonsafe
from ._audit import AuditLog
from ._bindings import Binding
from ._limits import Limits
from ._mcp_approval import Asker, Channel, Parked, Rounds, how_to_ask, request_channel
from ._policy import Approval, Policy
from ._result import RunResult
from ._sandbox import Sandbox
from ._session import Session
from ._text import json_text
from .render import strip_code_fences

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server import Server, ServerRequestContext

__all__ = ["TOOL_NAME", "SandboxServer"]

TOOL_NAME = "run_js_sandboxed"
#: deeper values cross as JSON text (MCP's JSON parsers on both sides stop near 200
#: levels, and pydantic's encoder near 255)
_MAX_STRUCTURED_DEPTH = 100

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


# -- what the model reads (clambot_tools.render: the same text as every other adapter)


def model_text(res: RunResult, code: str, bindings: Sequence[Binding] = ()) -> str:
    """The text content of a ``run_js_sandboxed`` result: what a model reads (never the
    script; a failure with its line, and a hint that may name the `bindings`)."""
    from .render import model_text as render

    return render(res, code, tools=bindings)


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


def tool_result(
    res: RunResult, code: str, bindings: Sequence[Binding] = ()
) -> types.CallToolResult:
    """The ``tools/call`` result of a run: text for the model, the RunResult as
    structured content, ``isError`` when the script failed."""
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=model_text(res, code, bindings))],
        structured_content=structured(res),
        is_error=not res.ok,
    )


def _refusal(message: str) -> types.CallToolResult:
    """A ``tools/call`` that ran nothing (a bad request): an isError result saying why."""
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], is_error=True
    )


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
        self._rounds = Rounds()
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

        from .render import tool_description

        key = (asks, kept)
        if key not in self._descriptions:
            described = self._asking if asks else self._plain
            self._descriptions[key] = tool_description(described, sessions=kept)
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

        asks = how_to_ask(ctx) is not None
        return types.ListToolsResult(tools=[self.tool(asks=asks, kept=self._kept(ctx))])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        if params.name != TOOL_NAME:
            return _refusal(f"there is no tool {params.name!r}; the only tool is {TOOL_NAME}")
        args = params.arguments or {}
        code = args.get("code")
        if not isinstance(code, str) or set(args) - {"code"}:
            return _refusal(
                f"{TOOL_NAME} takes one argument, code: the JavaScript program as a string"
            )
        code = strip_code_fences(code)  # line N of an error is line N inside the fence
        how = how_to_ask(ctx)
        if how != "rounds":
            channel = request_channel(ctx) if how == "request" else None
            return self._result(await self._run(ctx, code, channel), code)
        # 2026-07-28: questions travel as InputRequiredResult rounds
        if params.request_state is not None:
            parked = self._rounds.find(params.request_state, code)
            if parked is None:
                return _refusal(
                    "this call's requestState names no running script (it ended, or "
                    "belongs to another one): send the script again"
                )
            parked.answer(dict(params.input_responses or {}))
        else:
            parked = Parked(code)
            try:
                self._rounds.park(parked, self._run(ctx, code, parked.ask))
            except RuntimeError as exc:
                return _refusal(str(exc))
        outcome = await self._rounds.next(parked)
        return self._result(outcome, code) if isinstance(outcome, RunResult) else outcome

    def _result(self, res: RunResult, code: str) -> types.CallToolResult:
        return tool_result(res, code, self._bindings)

    async def _run(
        self, ctx: ServerRequestContext[Any, Any], code: str, channel: Channel | None
    ) -> RunResult:
        """Run `code` for the request `ctx` (in its MCP session's JavaScript session
        when sessions are kept), asking approvals through `channel` (None: refused)."""
        conn = _connection(ctx)
        if self.sessions and _has_session(ctx, conn):
            kept = self._kept_session(conn, asks=channel is not None)
            async with kept.lock:
                if kept.asker is not None:  # this request's channel, or none: refuse
                    kept.asker.begin(channel, self.limits.timeout_s)
                return await kept.session.arun(code)
        asker = None
        if channel is not None:
            asker = Asker(asyncio.get_running_loop())
            asker.begin(channel, self.limits.timeout_s)
        return await self._sandbox(asker).arun(code)

    def _kept_session(self, conn: Any, *, asks: bool) -> _Kept:
        """The JavaScript session of this MCP session, made on its first call (with an
        approver if its client can be asked) and closed when the MCP session ends."""
        kept: _Kept | None = conn.state.get(_STATE_KEY)
        if kept is None:
            asker = Asker(asyncio.get_running_loop()) if asks else None
            kept = _Kept(self._sandbox(asker).session(), asker)
            conn.state[_STATE_KEY] = kept
            conn.exit_stack.push_async_callback(kept.aclose)
        return kept
