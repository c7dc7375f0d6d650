"""Approvals of tool calls, answered by a human through LangGraph's ``interrupt()``.

How a paused script resumes: LangGraph has no way to freeze a running tool, so the
approver raises LangGraph's interrupt (the graph stops and shows the question), and
when the graph is resumed with ``Command(resume=answer)`` LangGraph runs the task
again: the script runs again from its first line, and this time the question finds
its answer. LangGraph hands answers back by their order in the task, which is not the
order in which scripts running side by side ask, nor what a script asks once the data
it reads has changed; so each question is recorded with its place in that order (in
the step's checkpoint, see `_ledger`), an answer is only ever applied to the question
it was given to, and a question the answers do not cover is asked anew.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict

from clambot_tools import Approval, ApprovalRequest, Approver, ConfigError
from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema

from ._adapt import RunState, bubble_up_types, copy_interrupt, is_invalid_resume
from ._ledger import TaskRun, canonical_json

logger = logging.getLogger("langchain_clambot")

#: the longest JSON of a call's arguments put to a human (longer ones are refused)
DEFAULT_MAX_ARGS_CHARS = 4000


class ActionRequest(TypedDict):
    """One call to review, as LangChain's ``HumanInTheLoopMiddleware`` shows it."""

    name: str
    args: dict[str, Any]
    description: str


class ReviewConfig(TypedDict):
    """The decisions a reviewer may give, as ``HumanInTheLoopMiddleware`` says."""

    action_name: str
    allowed_decisions: list[str]


class ApprovalInterrupt(TypedDict):
    """The value of the LangGraph interrupt raised for an approval (what a UI shows).

    The question names one call of a script: `binding` with the full `args` (the
    `question` text shows them too, as JSON). Resume with
    ``Command(resume=answer)``, or ``Command(resume={interrupt.id: answer})`` when
    several questions are pending, where `answer` is one of:

    * ``True`` / ``False``, ``"allow_once"``, ``"allow_session"``, ``"deny"``,
      ``"approve"`` / ``"reject"`` (or an ``Approval``);
    * ``{"decision": <one of those>, "request_id": <this request_id>}`` (a
      ``"message"`` next to a refusal is passed on to the model);
    * LangChain's human-in-the-loop shape, ``{"decisions": [{"type": "approve"}]}``
      or ``{"decisions": [{"type": "reject", "message": "..."}]}`` (this value
      carries ``action_requests`` and ``review_configs`` for such UIs).

    Any other answer, one naming another request_id, or an ``"edit"`` decision fails
    the resume with a ``pydantic.ValidationError`` (nothing is recorded: answer again).

    Attributes:
        request_id: names this exact call (binding, arguments, script, and how many
            identical calls the script made before it).
        tool_call_id: the model's tool call whose script makes the call.
        allow_session: what ``"allow_session"`` allows: ``"thread"`` (later calls
            of this binding in this conversation, for a tool with ``sessions=True``)
            or ``"script"`` (later calls in this script).
    """

    type: Literal["clambot_approval"]
    request_id: str
    tool_call_id: str
    question: str
    binding: str
    description: str
    effects: list[str]
    args: dict[str, Any]
    args_sha256: str
    code_sha256: str
    occurrence: int
    allow_session: Literal["thread", "script"]
    action_requests: list[ActionRequest]
    review_configs: list[ReviewConfig]


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


# Characters that would let a value hide or reorder what a person reads: controls, the
# format characters (bidirectional overrides, zero-width), line separators, surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def shown_json(value: Any) -> str:
    """`value` as JSON for a person to read: exact, with every character that could
    hide or reorder text written as a JSON escape (so it is still valid JSON)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in text
    )


def approval_payload(
    request: ApprovalRequest,
    *,
    tool_call_id: str = "",
    allow_session: Literal["thread", "script"] = "script",
    max_args_chars: int = DEFAULT_MAX_ARGS_CHARS,
) -> ApprovalInterrupt | None:
    """The interrupt value for `request`, or None when its arguments are longer than
    `max_args_chars` as JSON (too long for a person to check)."""
    args = _jsonable(dict(request.args))
    shown = shown_json(args)
    if len(shown) > max_args_chars:
        return None
    question = f"Allow the script to call tools.{request.binding}({shown})?"
    request_id = request.request_id or _digest(
        canonical_json([request.binding, args, request.code_sha256, request.occurrence])
    )
    return ApprovalInterrupt(
        type="clambot_approval",
        request_id=request_id,
        tool_call_id=tool_call_id,
        question=question,
        binding=request.binding,
        description=request.description,
        effects=list(request.effects),
        args=args,
        args_sha256=request.args_sha256,
        code_sha256=request.code_sha256,
        occurrence=request.occurrence,
        allow_session=allow_session,
        action_requests=[ActionRequest(name=request.binding, args=args, description=question)],
        review_configs=[
            ReviewConfig(action_name=request.binding, allowed_decisions=["approve", "reject"])
        ],
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- answers


class AnswerError(ValueError):
    """A resume value that is not an answer to the question it was given to."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """A human's answer: the decision, and what they said to the model, if anything."""

    decision: Approval
    message: str | None = None

    @property
    def allows(self) -> bool:
        """Whether the call goes ahead."""
        return self.decision in (Approval.ALLOW_ONCE, Approval.ALLOW_SESSION)


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

_HOW = (
    "answer True or False, 'allow_once', 'allow_session' or 'deny', "
    "{'decision': ..., 'request_id': ...}, or {'decisions': [{'type': 'approve'}]} / "
    "{'decisions': [{'type': 'reject', 'message': ...}]}"
)


def _decision(value: Any) -> Approval:
    if isinstance(value, Approval):
        return value
    if value is True:
        return Approval.ALLOW_ONCE
    if value is False:
        return Approval.DENY
    if isinstance(value, str):
        word = value.strip().lower()
        try:
            return Approval(word)
        except ValueError:
            if word in _WORDS:
                return _WORDS[word]
    raise AnswerError(f"{value!r} is not an approval answer: {_HOW}")


def _message(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def parse_answer(answer: Any, request_id: str) -> Answer:
    """The human's resume value for the question `request_id`.

    Raises AnswerError for a value that is not an answer, that names another
    request_id, or that asks for something a paused call cannot do (an edit)."""
    if not isinstance(answer, Mapping):
        return Answer(_decision(answer))
    if "decisions" in answer:  # LangChain's HumanInTheLoopMiddleware shape
        decisions = answer["decisions"]
        if not isinstance(decisions, list) or len(decisions) != 1:
            raise AnswerError(
                "this question is about one call: answer with exactly one decision, "
                f"not {decisions!r}"
            )
        (d,) = decisions
        kind = d.get("type") if isinstance(d, Mapping) else None
        if kind not in ("approve", "reject"):
            raise AnswerError(
                f"decision {kind!r} is not possible for a call a script is making (its "
                "arguments cannot be edited): the decision must be 'approve' or 'reject'"
            )
        message = _message(d.get("message")) if isinstance(d, Mapping) else None
        return Answer(_WORDS[kind], message)
    rid = answer.get("request_id")
    if rid is not None and rid != request_id:
        raise AnswerError(
            f"this answer is for request {rid!r}, but the question waiting for it is "
            f"request {request_id!r}"
        )
    for key in ("decision", "type", "approved"):
        if key in answer:
            return Answer(
                _decision(answer[key]), _message(answer.get("message", answer.get("reason")))
            )
    raise AnswerError(f"{dict(answer)!r} holds no decision: {_HOW}")


ANSWER_SCHEMA: dict[str, Any] = {
    "description": "An answer to an approval question of ClamBot: " + _HOW,
    "anyOf": [
        {"type": "boolean"},
        {"enum": ["allow_once", "allow_session", "deny", "approve", "reject"]},
        {
            "type": "object",
            "properties": {
                "decision": {"enum": ["allow_once", "allow_session", "deny"]},
                "request_id": {"type": "string"},
                "message": {"type": "string"},
            },
            "required": ["decision"],
        },
        {
            "type": "object",
            "properties": {
                "decisions": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["approve", "reject"]},
                            "message": {"type": "string"},
                        },
                        "required": ["type"],
                    },
                }
            },
            "required": ["decisions"],
        },
    ],
}


def _answer_type(request_id: str) -> Any:
    """The ``response_schema`` of the question `request_id`: LangGraph validates the
    resume value with it, and a value that is not an answer to this question fails
    the resume (nothing is recorded; the question can be answered again)."""

    def check(value: Any) -> Any:
        parse_answer(value, request_id)
        return value

    return Annotated[Any, BeforeValidator(check), WithJsonSchema(ANSWER_SCHEMA)]


def _ask(question: Mapping[str, Any], *, check: bool = True) -> Any:
    """LangGraph's ``interrupt()`` for `question`: its answer, or raises GraphInterrupt
    (no answer yet) or, with `check`, a ValidationError (an answer that is not one:
    LangGraph fails the resume, and the question can be answered again)."""
    from langgraph.types import interrupt

    if not check:
        return interrupt(dict(question))
    return interrupt(dict(question), response_schema=_answer_type(str(question["request_id"])))


class InterruptApprover:
    """The approver `langgraph_interrupt_approver` returns. SandboxedJSTool runs it
    through the task's records (see the module docstring); called on its own (by a
    plain Sandbox) it asks with ``interrupt()`` and nothing else.

    Attributes:
        max_args_chars: the longest JSON of a call's arguments put to a human.
    """

    __name__ = __qualname__ = "langgraph_interrupt_approver"

    def __init__(self, max_args_chars: int = DEFAULT_MAX_ARGS_CHARS) -> None:
        self.max_args_chars = max_args_chars

    def __call__(self, request: ApprovalRequest) -> Approval:
        payload = approval_payload(request, max_args_chars=self.max_args_chars)
        if payload is None:
            return Approval.DENY
        return parse_answer(_ask(payload), payload["request_id"]).decision


def langgraph_interrupt_approver(*, max_args_chars: int = DEFAULT_MAX_ARGS_CHARS) -> Approver:
    """An approver that asks a human through LangGraph's human-in-the-loop.

    Use it as ``Policy(approve=langgraph_interrupt_approver())`` in a SandboxedJSTool
    running inside a LangGraph graph compiled with a checkpointer. A call that needs
    approval pauses the graph with an ``ApprovalInterrupt`` (the call and its full
    arguments) as the interrupt's value; ``graph.invoke(Command(resume=True), config)``
    approves it (see ApprovalInterrupt for every answer). On resume the script runs
    again from its start: the answer is applied to the call it was given for, and
    only if the script makes that same call again (otherwise the new call is asked
    about); a write that already ran in this step is not run again (the script gets
    its recorded result); calls that are not writes run again.

    Args:
        max_args_chars: a call whose arguments are longer than this as JSON is not
            put to a human: it is refused, and the model is told to pass less data.

    Outside a LangGraph run the approver has no graph to pause: it fails, and a
    failing approver denies.

    Raises ImportError if LangGraph is not installed, ConfigError if
    `max_args_chars` is not an int of at least 100.
    """
    import langgraph.types  # noqa: F401 - fail now, not at the first call

    if isinstance(max_args_chars, bool) or not isinstance(max_args_chars, int):
        raise ConfigError(f"max_args_chars must be an int, got {max_args_chars!r}")
    if max_args_chars < 100:
        raise ConfigError(f"max_args_chars must be at least 100, got {max_args_chars}")
    return InterruptApprover(max_args_chars)


# -- one run's approver


def _is_yes(answer: Any) -> bool:
    """Whether an approver's answer lets the call go ahead."""
    return answer is True or answer in (Approval.ALLOW_ONCE, Approval.ALLOW_SESSION)


@dataclasses.dataclass(frozen=True)
class _Stop:
    """The task run is paused (or its resume value was invalid): stop the script."""

    exc: BaseException


@dataclasses.dataclass(frozen=True)
class _Refuse:
    """Refuse the call without asking; tell the model why."""

    note: str


Step = Answer | _Stop | _Refuse


def _taken(task: TaskRun, state: RunState, upto: int) -> _Stop | None:
    """Take the answers of the questions at slots below `upto` (in slot order: that is
    how LangGraph hands them back). None once taken; a _Stop when a question among them
    is still unanswered (the task pauses with it) or an answer is invalid."""
    while len(task.answers) < upto:
        if task.open is not None:  # asked in this run already: still unanswered
            return _Stop(task.open)
        slot = len(task.answers)
        question = task.asked[slot]
        # Only the last question can be getting its answer now; the answers of earlier
        # ones were checked when given (one that is not an answer after all, which
        # another interrupt of the task could have left there, reads as none).
        last = slot == len(task.asked) - 1
        try:
            value = state.context.copy().run(functools.partial(_ask, question, check=last))
        except bubble_up_types() as exc:
            task.open = exc
            return _Stop(exc)
        except ValidationError as exc:
            if not is_invalid_resume(exc):
                raise
            task.open = exc
            return _Stop(exc)
        task.answers.append(value)
    return None


def _answer_at(task: TaskRun, slot: int) -> Answer | None:
    """The answer taken at `slot` (None for an answer given to another question)."""
    question = task.asked[slot]
    if question.get("stale"):
        return None
    try:
        return parse_answer(task.answers[slot], str(question["request_id"]))
    except AnswerError:
        return None


def _session_grant(task: TaskRun, payload: ApprovalInterrupt) -> bool:
    """Whether an answer taken in this run allowed `payload`'s binding for the session
    (the thread's, or this tool call's script's)."""
    for slot in range(len(task.answers)):
        question = task.asked[slot]
        if question.get("binding") != payload["binding"]:
            continue
        if payload["allow_session"] == "script" and (
            question.get("tool_call_id") != payload["tool_call_id"]
            or question.get("code_sha256") != payload["code_sha256"]
        ):
            continue
        answer = _answer_at(task, slot)
        if answer is not None and answer.decision == Approval.ALLOW_SESSION:
            return True
    return False


def _slot_of(task: TaskRun, payload: ApprovalInterrupt) -> int | None:
    for slot, question in enumerate(task.asked):
        if (
            not question.get("stale")
            and question.get("request_id") == payload["request_id"]
            and question.get("tool_call_id") == payload["tool_call_id"]
        ):
            return slot
    return None


def _new_question(task: TaskRun, state: RunState, payload: ApprovalInterrupt) -> Step:
    """Put `payload` to the human at the next slot (called with every earlier answer
    taken)."""
    for _ in range(8):
        slot = len(task.asked)
        try:
            value = state.context.copy().run(_ask, payload)
        except bubble_up_types() as exc:
            try:
                task.record_asked(slot, payload)
            except Exception:
                logger.exception("could not record an approval question in the checkpoint")
                return _Refuse(
                    f"tools.{payload['binding']} was not called: its approval question "
                    "could not be recorded. Try again later."
                )
            task.open = exc
            return _Stop(exc)
        except ValidationError as exc:
            if not is_invalid_resume(exc):
                raise
            task.open = exc
            return _Stop(exc)
        # An answer was waiting at a slot none of our questions holds: it was given
        # to another question (another interrupt of this task), never to this one.
        task.record_asked(slot, {**payload, "stale": True})
        task.answers.append(value)
    return _Refuse(
        f"tools.{payload['binding']} was not called: this step's answers could not be "
        "matched to its approval questions. Make the call in a new script."
    )


def _decide(task: TaskRun, state: RunState, payload: ApprovalInterrupt) -> Step:
    """What to do with the call `payload` asks about, in this run of the task."""
    task.load()
    with task.lock:
        slot = _slot_of(task, payload)
        if slot is not None:
            stop = _taken(task, state, slot + 1)
            if stop is not None:
                return stop
            answer = _answer_at(task, slot)
            if answer is None:
                return _Refuse(
                    f"tools.{payload['binding']} was not called: the answer to its "
                    "approval question could not be read. Make the call in a new script."
                )
            return answer
        if task.open is not None:  # one new question per run: it is asked next time
            return _Stop(task.open)
        stop = _taken(task, state, len(task.asked))
        if stop is not None:
            return stop
        if _session_grant(task, payload):
            return Answer(Approval.ALLOW_SESSION)
        if task.ledger is None and task.wrote:
            return _Refuse(
                f"tools.{payload['binding']} needs a human's approval, which this step can "
                "no longer wait for (a write already went ahead, and without a "
                "checkpointer it would run again on resume): it was not called. Make "
                "that call in a new script."
            )
        return _new_question(task, state, payload)


def _through_task(approver: InterruptApprover, state: RunState) -> Approver:
    """`approver` as one run's approver, asking through the task's records."""

    def wrapped(request: ApprovalRequest) -> Approval:
        if state.stopped:
            return Approval.DENY
        if state.granted(request.binding):
            return Approval.ALLOW_ONCE
        payload = approval_payload(
            request,
            tool_call_id=state.call_id,
            allow_session=state.session_scope,
            max_args_chars=approver.max_args_chars,
        )
        if payload is None:
            size = len(shown_json(_jsonable(dict(request.args))))
            state.note(
                f"tools.{request.binding} was not called: its arguments ({size:,} "
                "characters as JSON) are too long for the human who must approve the "
                f"call to check (at most {approver.max_args_chars:,}). Pass less data "
                "to it (ids rather than whole records), or split the work."
            )
            return Approval.DENY
        step = _decide(state.task, state, payload)
        if isinstance(step, _Stop):
            if is_invalid_resume(step.exc):
                state.fail(step.exc)
            else:
                state.pause(copy_interrupt(step.exc))
            return Approval.DENY
        if isinstance(step, _Refuse):
            state.note(step.note)
            return Approval.DENY
        if step.decision == Approval.ALLOW_SESSION:
            state.grant(request.binding)
        if step.allows:
            return Approval.ALLOW_ONCE
        if step.message is not None:
            state.note(f"the human refused tools.{request.binding}: {step.message}")
        return Approval.DENY

    return wrapped


def run_approver(approve: Approver, state: RunState) -> Approver:
    """`approve` as one run's approver.

    * Calls to a binding allowed for the session (``ALLOW_SESSION``: the thread's
      session for a session tool, else the rest of the script) are not asked about.
    * `langgraph_interrupt_approver`'s questions go through the task's records: an
      answer is applied to the call it was given for, one new question is put per run
      of a task, and the run pauses (its script stops, the tool re-raises the
      interrupt) until the question is answered.
    * Any other approver is called in a copy of the context of the tool's run (so it
      may call LangGraph's ``interrupt()``, which pauses the run), one call at a time.
    """
    if isinstance(approve, InterruptApprover):
        return _through_task(approve, state)

    def on_answer(request: ApprovalRequest, answer: Any) -> Any:
        if answer == Approval.ALLOW_SESSION:
            state.grant(request.binding)
        return Approval.ALLOW_ONCE if _is_yes(answer) else answer

    async def finish(request: ApprovalRequest, pending: Any) -> Any:
        try:
            answer = await state.in_context(pending)
        except bubble_up_types() as exc:
            state.pause(exc)
            return Approval.DENY
        return on_answer(request, answer)

    def wrapped(request: ApprovalRequest) -> Any:
        if state.stopped:
            return Approval.DENY
        if state.granted(request.binding):
            return Approval.ALLOW_ONCE
        with state.approval_lock:
            if state.stopped:
                return Approval.DENY
            try:
                answer = state.context.copy().run(approve, request)
            except bubble_up_types() as exc:
                state.pause(exc)
                return Approval.DENY
            except Exception as exc:
                logger.warning(
                    "the approver failed, so tools.%s is denied: %s", request.binding, exc
                )
                raise
            if not inspect.isawaitable(answer):
                return on_answer(request, answer)
        return finish(request, answer)

    return wrapped
