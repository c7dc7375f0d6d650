"""Approvals of tool calls, answered by a human through LangGraph's ``interrupt()``.

How a paused script resumes: LangGraph has no way to freeze a running tool, so the
approver raises LangGraph's interrupt (the graph stops and shows the request), and
when the graph is resumed with ``Command(resume=answer)`` LangGraph runs the tool node
again: the script runs again from its first line, and this time ``interrupt()``
returns the human's answer for that approval. A script that asks for several
approvals pauses once per approval; each resume re-runs it with one more answer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from clambot_tools import Approval, ApprovalRequest, Approver
from pydantic import BaseModel

from ._adapt import RunState, bubble_up_types

logger = logging.getLogger("langchain_clambot")


class ApprovalInterrupt(TypedDict):
    """The value of the LangGraph interrupt raised for an approval (what a UI shows).

    Resume with ``Command(resume=answer)``, where `answer` is True/False, an
    ``Approval`` or its value (``"allow_once"``, ``"allow_session"``, ``"deny"``),
    ``"approve"``/``"reject"``, or a dict ``{"decision": <one of those>,
    "request_id": <this request_id>}``. With a request_id that is not this request's,
    the call is denied (so an answer can never approve a different call).
    """

    type: Literal["clambot_approval"]
    request_id: str
    question: str
    binding: str
    description: str
    effects: list[str]
    args: dict[str, Any]
    code_sha256: str


def _jsonable(value: Any) -> Any:
    """`value` as JSON data for the interrupt's payload (stored by the checkpointer)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def approval_payload(request: ApprovalRequest) -> ApprovalInterrupt:
    """The interrupt value for `request`; its request_id is a digest of the binding and
    its arguments (the same call gets the same id when the script runs again)."""
    args = _jsonable(dict(request.args))
    canonical = json.dumps(
        {"binding": request.binding, "args": args}, sort_keys=True, ensure_ascii=False, default=str
    )
    request_id = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    shown = json.dumps(args, ensure_ascii=False, default=str)
    if len(shown) > 500:
        shown = shown[:500] + "..."
    return ApprovalInterrupt(
        type="clambot_approval",
        request_id=request_id,
        question=f"Allow the script to call tools.{request.binding}({shown})?",
        binding=request.binding,
        description=request.description,
        effects=list(request.effects),
        args=args,
        code_sha256=request.code_sha256,
    )


_WORDS: dict[str, Approval] = {
    "approve": Approval.ALLOW_ONCE,
    "approved": Approval.ALLOW_ONCE,
    "accept": Approval.ALLOW_ONCE,
    "allow": Approval.ALLOW_ONCE,
    "yes": Approval.ALLOW_ONCE,
    "reject": Approval.DENY,
    "rejected": Approval.DENY,
    "no": Approval.DENY,
}


def parse_answer(answer: Any, request_id: str) -> Approval:
    """The human's resume value as an Approval; anything unclear denies. Never raises."""
    if isinstance(answer, Mapping):
        rid = answer.get("request_id")
        if rid is not None and rid != request_id:
            logger.warning(
                "approval answer for request %s applied to request %s: denied", rid, request_id
            )
            return Approval.DENY
        answer = answer.get("decision", answer.get("type", answer.get("approved")))
    if isinstance(answer, Approval):
        return answer
    if answer is True:
        return Approval.ALLOW_ONCE
    if isinstance(answer, str):
        word = answer.strip().lower()
        try:
            return Approval(word)
        except ValueError:
            return _WORDS.get(word, Approval.DENY)
    return Approval.DENY


def langgraph_interrupt_approver() -> Approver:
    """An approver that asks a human through LangGraph's human-in-the-loop.

    Use it as ``Policy(approve=langgraph_interrupt_approver())`` in a SandboxedJSTool
    running inside a LangGraph graph compiled with a checkpointer. A call that needs
    approval pauses the graph with an ``ApprovalInterrupt`` as the interrupt's value;
    ``graph.invoke(Command(resume=True), config)`` approves it (False denies; see
    ApprovalInterrupt for every answer). On resume the script runs again from its
    start, and the approved call goes ahead, so calls made before it run again too:
    make them reads, or idempotent.

    Outside a LangGraph run the approver has no graph to pause: it fails, and a
    failing approver denies.

    Raises ImportError if LangGraph is not installed.
    """
    from langgraph.types import interrupt

    def approve(request: ApprovalRequest) -> Approval:
        payload = approval_payload(request)
        return parse_answer(interrupt(payload), payload["request_id"])

    approve.__qualname__ = approve.__name__ = "langgraph_interrupt_approver"
    return approve


class SessionApprovals:
    """What approvals a tool remembers across runs, in this process.

    * the bindings a human allowed for the rest of the tool's life (``ALLOW_SESSION``);
    * which request was put to the human at each approval of a paused run (keyed by
      thread, task and script), so that when the run is re-run, an answer is never
      applied to a different call (calls made concurrently can ask in another order).
    """

    _MAX_ASKED = 10_000

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._asked: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._names

    def add(self, name: str) -> None:
        """Remember `name` as allowed."""
        with self._lock:
            self._names.add(name)

    def asked(self, key: tuple[str, ...] | None, request_id: str) -> None:
        """Remember that the request put to the human under `key` was `request_id`."""
        if key is None:
            return
        with self._lock:
            self._asked[key] = request_id
            self._asked.move_to_end(key)
            while len(self._asked) > self._MAX_ASKED:
                self._asked.popitem(last=False)

    def was_asked(self, key: tuple[str, ...] | None) -> str | None:
        """The request_id put to the human under `key`, if this process knows it."""
        if key is None:
            return None
        with self._lock:
            return self._asked.get(key)


def _ask_key(state: RunState, request: ApprovalRequest, seq: int) -> tuple[str, ...] | None:
    """(thread, task namespace, script, n-th approval of the run), inside LangGraph."""
    conf = (state.config or {}).get("configurable") or {}
    thread, ns = conf.get("thread_id"), conf.get("checkpoint_ns")
    if thread is None or ns is None:
        return None
    return (str(thread), str(ns), request.code_sha256, str(seq))


def _is_yes(answer: Any) -> bool:
    """Whether an approver's answer lets the call go ahead."""
    return answer is True or answer in (Approval.ALLOW_ONCE, Approval.ALLOW_SESSION)


def run_approver(approve: Approver, state: RunState, session: SessionApprovals) -> Approver:
    """`approve` as one run's approver.

    * It is called in a copy of the context of the tool's run (so it may call
      LangGraph's ``interrupt()``), one call at a time.
    * An interrupt it raises pauses the run: the call and every later one are refused,
      and the tool re-raises the interrupt when the script ends; on resume LangGraph
      runs the script again and ``interrupt()`` returns the human's answer.
    * A run pauses only before any approved call went ahead: once one did, a call
      that would need another pause is refused instead (with a note for the model),
      since resuming would run the approved call a second time.
    * An answer given to a different request than this one (a request_id in the
      answer, or what this process remembers it asked) denies.
    * ``ALLOW_SESSION`` answers are remembered across runs of the tool.
    """

    def on_pause(request: ApprovalRequest, seq: int, exc: BaseException) -> Any:
        if state.approved:
            state.note(
                f"tools.{request.binding} needs a human's approval, which a script can "
                "only wait for before its first approved call: it was not called. Make "
                "that call in a new script."
            )
            return Approval.DENY
        session.asked(_ask_key(state, request, seq), approval_payload(request)["request_id"])
        state.pause(exc)
        return Approval.DENY

    def on_answer(request: ApprovalRequest, seq: int, answer: Any) -> Any:
        asked = session.was_asked(_ask_key(state, request, seq))
        if asked is not None and asked != approval_payload(request)["request_id"]:
            state.note(
                f"tools.{request.binding} was not called: the human's answer was for "
                "another call of this script (calls asking for approval at the same time "
                "can ask in another order). Make one such call per script."
            )
            return Approval.DENY
        if answer == Approval.ALLOW_SESSION:
            session.add(request.binding)
        if _is_yes(answer):
            state.count_approved()
        return answer

    async def finish(request: ApprovalRequest, seq: int, pending: Any) -> Any:
        try:
            answer = await state.in_context(pending)
        except bubble_up_types() as exc:
            return on_pause(request, seq, exc)
        return on_answer(request, seq, answer)

    def wrapped(request: ApprovalRequest) -> Any:
        if state.pending is not None:
            return Approval.DENY
        if request.binding in session:
            state.count_approved()
            return Approval.ALLOW_SESSION
        with state.approval_lock:
            if state.pending is not None:
                return Approval.DENY
            seq = state.approvals_asked
            state.approvals_asked += 1
            try:
                answer = state.context.copy().run(approve, request)
            except bubble_up_types() as exc:
                return on_pause(request, seq, exc)
            except Exception as exc:
                logger.warning(
                    "the approver failed, so tools.%s is denied: %s", request.binding, exc
                )
                raise
            if not inspect.isawaitable(answer):
                return on_answer(request, seq, answer)
        return finish(request, seq, answer)

    return wrapped
