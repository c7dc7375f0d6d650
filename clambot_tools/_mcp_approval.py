"""Approvals for ``clambot mcp``: a call that needs approval is put to the MCP client's
user as an elicitation (a form with one checkbox), on the ``tools/call`` that runs
the script.

How the question travels depends on the protocol the client speaks:

* **2025-era handshake**: the server sends ``elicitation/create`` on the request's own
  channel and awaits the answer (`request_channel`).
* **2026-07-28**: a server may not send requests. The ``tools/call`` answers
  ``InputRequiredResult`` (the question, and a ``requestState`` naming the running
  script), the client asks its user and calls again with the answer and the state,
  and that call goes on waiting for the script (`Rounds`). The script keeps running
  meanwhile, under its own deadline.

Either way `Asker`, the run's approver, waits for the answer on a package thread and
at most until the run's deadline (plus a moment, so that an answer that arrives just
too late is recorded as ``expired`` rather than lost).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from ._policy import Approval, ApprovalRequest
from ._result import RunResult
from ._text import json_text, visible

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server import ServerRequestContext

#: arguments longer than this (as JSON) are refused without asking: nobody can review them
MAX_QUESTION_ARGS_CHARS = 20_000
#: how long past its run's deadline a question waits for its answer, so that an answer
#: that arrives just too late is recorded as such (``expired``)
LATE_ANSWER_S = 1.0
#: how long a finished script's result waits for the client's next round (2026-07-28)
PARKED_RESULT_S = 60.0
#: scripts waiting for a client's round at once, at most (2026-07-28)
MAX_PARKED = 1000

APPROVAL_SCHEMA: dict[str, Any] = {
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

#: puts a question to the client's user and returns the answer
Channel = Callable[[str], Awaitable["types.ElicitResult"]]


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


def allowed(answer: Any) -> bool:
    """Whether an elicitation's answer allows the call: the form accepted, box checked."""
    content = getattr(answer, "content", None) or {}
    return getattr(answer, "action", None) == "accept" and content.get("allow") is True


def how_to_ask(ctx: ServerRequestContext[Any, Any]) -> Literal["request", "rounds"] | None:
    """How this request's client can be asked a question: by a request on the same
    channel (2025 era), by ``InputRequiredResult`` rounds (2026-07-28), or not at all
    (it declared no form elicitation, or cannot receive a request now)."""
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    caps = ctx.session.client_capabilities
    if caps is None or caps.elicitation is None:
        return None
    # an empty elicitation capability (2025-06-18) means form mode
    if caps.elicitation.form is None and caps.elicitation.url is not None:
        return None
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return "rounds"
    return "request" if ctx.session.can_send_request else None


def request_channel(ctx: ServerRequestContext[Any, Any]) -> Channel:
    """Ask with ``elicitation/create`` on the channel of the request `ctx`."""

    async def ask(text: str) -> types.ElicitResult:
        return await ctx.session.elicit_form(
            text, APPROVAL_SCHEMA, related_request_id=ctx.request_id
        )

    return ask


class Asker:
    """The approver of one run (or of one session's runs, one at a time).

    Called on one of the package's threads (approvers may block there), it puts the
    question through the run's channel on the server's event loop and waits for the
    answer, at most until the run's deadline (plus `LATE_ANSWER_S`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self._channel: Channel | None = None
        self._deadline = 0.0

    def begin(self, channel: Channel | None, timeout_s: float) -> None:
        """A run of `timeout_s` seconds starts, whose questions go through `channel`
        (None: nobody can be asked, every question is refused)."""
        self._channel = channel
        self._deadline = time.monotonic() + timeout_s

    def __call__(self, req: ApprovalRequest) -> Approval:
        channel, deadline = self._channel, self._deadline
        if channel is None or threading.get_ident() == self._loop_thread:
            return Approval.DENY  # never block the loop that must carry the answer
        text = question(req)
        if text is None:
            return Approval.DENY
        window = deadline + LATE_ANSWER_S - time.monotonic()
        if window <= 0:
            return Approval.DENY
        pending = asyncio.run_coroutine_threadsafe(_ask(channel, text), self._loop)
        try:
            answer = pending.result(timeout=window)
        except cf.TimeoutError:
            pending.cancel()  # the question is withdrawn
            return Approval.DENY
        return Approval.ALLOW_ONCE if allowed(answer) else Approval.DENY


async def _ask(channel: Channel, text: str) -> types.ElicitResult:
    return await channel(text)


# -- 2026-07-28: questions as InputRequiredResult rounds


class Parked:
    """A script running for a 2026-07-28 client: its task, and the questions it waits
    on (each until the client's next round answers it)."""

    def __init__(self, code: str) -> None:
        self.code_sha256 = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        self.token = secrets.token_urlsafe(32)
        self.task: asyncio.Task[RunResult] | None = None
        self.open: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self.changed = asyncio.Event()
        self._asked = 0

    async def ask(self, text: str) -> types.ElicitResult:
        """A `Channel`: park the question until a round answers it."""
        self._asked += 1
        key = f"approval-{self._asked}"
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.open[key] = (text, answer)
        self.changed.set()
        try:
            result: types.ElicitResult = await answer
            return result
        finally:
            self.open.pop(key, None)

    def answer(self, responses: dict[str, Any]) -> None:
        """Deliver a round's answers to the questions they name (others are ignored)."""
        import mcp_types as types

        for key, response in responses.items():
            entry = self.open.get(key)
            if entry is None or entry[1].done():
                continue
            if not isinstance(response, types.ElicitResult):
                response = types.ElicitResult(action="decline")
            entry[1].set_result(response)


class Rounds:
    """The scripts of 2026-07-28 clients that wait for a round, by their state token."""

    def __init__(self) -> None:
        self._parked: dict[str, Parked] = {}

    def park(self, parked: Parked, run: Awaitable[RunResult]) -> None:
        """Start `run` (whose approver asks through ``parked.ask``) for `parked`.

        Raises RuntimeError when too many scripts are parked already."""
        if len(self._parked) >= MAX_PARKED:
            raise RuntimeError("too many scripts are waiting for their clients' answers")
        loop = asyncio.get_running_loop()
        parked.task = loop.create_task(_awaiting(run))
        self._parked[parked.token] = parked

        def done(_: object) -> None:  # kept a while for the client's next round
            loop.call_later(PARKED_RESULT_S, self._parked.pop, parked.token, None)

        parked.task.add_done_callback(done)

    def find(self, token: str, code: str) -> Parked | None:
        """The parked script `token` names, if it is the script `code`."""
        parked = self._parked.get(token)
        sha = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        if parked is None or not secrets.compare_digest(parked.code_sha256, sha):
            return None
        return parked

    async def next(self, parked: Parked) -> RunResult | types.InputRequiredResult:
        """Wait for the script to end (its RunResult) or to ask (the open questions,
        as an InputRequiredResult naming it). A cancelled round cancels the script."""
        import mcp_types as types

        task = parked.task
        assert task is not None
        try:
            while True:
                if task.done():
                    self._parked.pop(parked.token, None)
                    return task.result()
                waiting = {k: t for k, (t, fut) in parked.open.items() if not fut.done()}
                if waiting:
                    return types.InputRequiredResult(
                        input_requests={
                            key: types.ElicitRequest(
                                params=types.ElicitRequestFormParams(
                                    message=text, requested_schema=APPROVAL_SCHEMA
                                )
                            )
                            for key, text in waiting.items()
                        },
                        request_state=parked.token,
                    )
                parked.changed.clear()
                changed = asyncio.ensure_future(parked.changed.wait())
                try:
                    await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        except asyncio.CancelledError:
            task.cancel()
            self._parked.pop(parked.token, None)
            raise


async def _awaiting(run: Awaitable[RunResult]) -> RunResult:
    return await run
