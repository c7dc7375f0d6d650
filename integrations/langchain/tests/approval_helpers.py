"""Helpers of the approval tests (and of approval_worker.py, which runs them in another
process): tools that record what they did in a file, so the calls another process made
are seen too; the graph of each documented pattern; and a human who answers every
question until the graph ends, noting each question shown.

The patterns: ``agent`` is ``create_agent`` (one LangGraph task per tool call);
``toolnode`` is the README's hand-built ``StateGraph`` + ``ToolNode([js])``, which runs
all the tool calls of one AIMessage in one task.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clambot_tools import Limits, Policy
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from lc_helpers import js_calls, scripted

from langchain_clambot import (
    JSSessionMiddleware,
    JSSessionState,
    SandboxedJSTool,
    langgraph_interrupt_approver,
)

PATTERNS = ("agent", "toolnode")

#: two scripts in one AIMessage, each reading an order, then refunding it
PARALLEL = (
    (
        "const o1 = await tools.lookup({order_id: 'P1'});\n"
        "await tools.refund({order_id: 'P1', amount_eur: o1.amount_eur})",
        "p1",
    ),
    (
        "const o2 = await tools.lookup({order_id: 'P2'});\n"
        "await tools.refund({order_id: 'P2', amount_eur: o2.amount_eur})",
        "p2",
    ),
)
#: one script that refunds two orders, one after the other
SEQUENTIAL = (
    (
        "const a = await tools.refund({order_id: 'A', amount_eur: 1});\n"
        "const o = await tools.lookup({order_id: 'B'});\n"
        "const b = await tools.refund({order_id: 'B', amount_eur: o.amount_eur});\n"
        "[a.refunded, b.refunded]",
        "s1",
    ),
)
SHAPES = {"parallel": PARALLEL, "sequential": SEQUENTIAL}


class ToolState(MessagesState, JSSessionState):
    """The hand-built graph's state, with the keys a session tool keeps."""


_LOCK = threading.Lock()


def _append(path: Path, record: list[Any]) -> None:
    with _LOCK, path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def refunds(log: Path) -> list[tuple[str, float]]:
    """The refunds made so far, in every process, in order."""
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [(r[1], r[2]) for r in rows if r[0] == "refund"]


def make_tools(log: Path, data: Path | None = None) -> list[BaseTool]:
    """`lookup` (an order's amount: from the JSON file `data` when given, else 30) and
    `refund`, both recorded in `log`."""

    @tool
    def lookup(order_id: str) -> dict[str, Any]:
        """Look up an order."""
        amounts = json.loads(data.read_text()) if data is not None else {}
        return {"order_id": order_id, "amount_eur": amounts.get(order_id, 30)}

    @tool
    def refund(order_id: str, amount_eur: float, note: str = "") -> dict[str, Any]:
        """Refund an order, with a note for the customer."""
        _append(log, ["refund", order_id, amount_eur])
        return {"refunded": amount_eur, "order_id": order_id}

    return [lookup, refund]


def make_js(log: Path, data: Path | None = None, **kwargs: Any) -> SandboxedJSTool:
    """The tool of the tests: `refund` is a write that a human must approve."""
    kwargs.setdefault("policy", Policy(approve=langgraph_interrupt_approver()))
    kwargs.setdefault("limits", Limits(timeout_s=20))
    return SandboxedJSTool(tools=make_tools(log, data), effects={"refund": ["write"]}, **kwargs)


def build(pattern: str, js: SandboxedJSTool, saver: Any, *model: AIMessage) -> Any:
    """The graph of `pattern` running `js`. For ``agent``, the scripted model answers
    with `model`, then "done"."""
    if pattern == "agent":
        middleware = [JSSessionMiddleware()] if js.sessions else []
        return create_agent(
            scripted(*model, AIMessage("done")), [js], middleware=middleware, checkpointer=saver
        )
    state = ToolState if js.sessions else MessagesState
    return (
        StateGraph(state)
        .add_node("tools", ToolNode([js]))
        .add_edge(START, "tools")
        .compile(checkpointer=saver)
    )


def cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def start(pattern: str, graph: Any, thread: str, calls: Iterable[tuple[str, str]]) -> Any:
    """One turn of `thread` that runs the scripts `calls` (for ``agent``, the graph's
    model must have been given ``js_calls(*calls)``)."""
    if pattern == "agent":
        return graph.invoke({"messages": [HumanMessage("go")]}, cfg(thread))
    return graph.invoke({"messages": [js_calls(*calls)]}, cfg(thread))


def agent_model(pattern: str, calls: Iterable[tuple[str, str]]) -> tuple[AIMessage, ...]:
    """What the scripted model of `pattern` says first: the tool calls (agent only)."""
    return (js_calls(*calls),) if pattern == "agent" else ()


def human(deny: Iterable[str] = (), allow: Any = True) -> Callable[[dict[str, Any]], Any]:
    """A human who answers `allow`, except False for the orders in `deny`."""
    denied = set(deny)

    def answer(question: dict[str, Any]) -> Any:
        return False if question["args"].get("order_id") in denied else allow

    return answer


def shown(question: dict[str, Any]) -> tuple[str, Any]:
    """(order, amount) of a question, as the human read it."""
    assert question["type"] == "clambot_approval"
    args = question["args"]
    assert json.dumps(args, ensure_ascii=False) in question["question"]
    return args["order_id"], args["amount_eur"]


def answer_all(
    graph: Any,
    thread: str,
    answer: Callable[[dict[str, Any]], Any],
    how: str = "map",
    out: Any = None,
    rounds: int = 8,
    must_end: bool = True,
) -> tuple[list[tuple[str, Any]], Any]:
    """Answer every question of `thread` until the graph ends: ``how="bare"`` resumes
    with the answer alone (one question must be pending), ``"map"`` with
    ``{interrupt.id: answer}`` for each pending question. `out` is the last result
    (None: read the pending questions from the checkpoint). Returns the questions
    shown, in order, and the last result. Stops after `rounds` resumes (an error
    unless `must_end` is False)."""
    asked: list[tuple[str, Any]] = []
    for _ in range(rounds):
        pending = (
            out.get("__interrupt__", ())
            if out is not None
            else graph.get_state(cfg(thread)).interrupts
        )
        if not pending:
            return asked, out
        asked += [shown(i.value) for i in pending]
        if how == "bare":
            assert len(pending) == 1, pending
            resume: Any = answer(pending[0].value)
        else:
            resume = {i.id: answer(i.value) for i in pending}
        out = graph.invoke(Command(resume=resume), cfg(thread))
    if must_end:
        raise AssertionError(f"still asking after {rounds} rounds: {asked}")
    return asked, out


async def aanswer_all(
    graph: Any, thread: str, answer: Callable[[dict[str, Any]], Any], out: Any
) -> tuple[list[tuple[str, Any]], Any]:
    """`answer_all` (with ``{interrupt.id: answer}``) through ``ainvoke``."""
    asked: list[tuple[str, Any]] = []
    for _ in range(8):
        pending = out.get("__interrupt__", ())
        if not pending:
            return asked, out
        asked += [shown(i.value) for i in pending]
        resume = {i.id: answer(i.value) for i in pending}
        out = await graph.ainvoke(Command(resume=resume), cfg(thread))
    raise AssertionError(f"still asking: {asked}")


def tool_results(values: Any) -> dict[str, tuple[str, str]]:
    """(status, content) of each ToolMessage of the thread (a graph's result or state
    values), by tool call id."""
    return {
        str(m.tool_call_id): (m.status, str(m.content))
        for m in values.get("messages", [])
        if isinstance(m, ToolMessage)
    }
