"""Approvals of write tools answered by a human through LangGraph's interrupt, in a
real graph with a checkpointer: pause, resume, re-run; the answers a human may give.
(test_langchain_approval_graphs.py and _workers.py hold each documented pattern.)"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import (
    Approval,
    ApprovalRequest,
    ConfigError,
    Limits,
    Policy,
    Sandbox,
    binding,
)
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command
from lc_helpers import js_call, scripted

from langchain_clambot import SandboxedJSTool, langgraph_interrupt_approver, merge_js_approvals
from langchain_clambot._approval import Answer, AnswerError, parse_answer

LOOKUP_THEN_REFUND = """
const o = await tools.lookup({order_id: 'A1'});
const r = await tools.refund({order_id: 'A1', amount_eur: o.amount_eur});
({refunded: r.refunded, id: o.order_id})
"""


def make_agent(code: str) -> tuple[Any, list[tuple[Any, ...]]]:
    ran: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    @tool
    def lookup(order_id: str) -> dict[str, Any]:
        """Look up an order."""
        with lock:
            ran.append(("lookup", order_id))
        return {"order_id": order_id, "amount_eur": 30}

    @tool
    def refund(order_id: str, amount_eur: float) -> dict[str, Any]:
        """Refund an order."""
        with lock:
            ran.append(("refund", order_id, amount_eur))
        return {"refunded": amount_eur}

    js = SandboxedJSTool(
        tools=[lookup, refund],
        effects={"refund": ["write"]},
        policy=Policy(approve=langgraph_interrupt_approver()),
        limits=Limits(timeout_s=3),
    )
    model = scripted(js_call(code, "c1"), AIMessage(content="done"))
    return create_agent(model, [js], checkpointer=InMemorySaver()), ran


def tool_messages(out: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def test_approved_after_resume() -> None:
    agent, ran = make_agent(LOOKUP_THEN_REFUND)
    cfg: Any = {"configurable": {"thread_id": "approve"}}
    out = agent.invoke({"messages": [HumanMessage("refund A1")]}, cfg)

    (intr,) = out["__interrupt__"]
    assert intr.value["type"] == "clambot_approval"
    assert intr.value["binding"] == "refund"
    assert intr.value["args"] == {"order_id": "A1", "amount_eur": 30}
    assert intr.value["effects"] == ["write"]
    assert "tools.refund" in intr.value["question"]
    assert ran == [("lookup", "A1")]  # paused before the refund
    assert tool_messages(out) == []

    out = agent.invoke(Command(resume=True), cfg)
    assert "__interrupt__" not in out
    (msg,) = tool_messages(out)
    assert msg.status == "success"
    assert msg.content == 'Result (JSON): {"refunded":30,"id":"A1"}'
    # the script ran again from its start: the read twice, the refund once
    assert ran == [("lookup", "A1"), ("lookup", "A1"), ("refund", "A1", 30.0)]
    assert out["messages"][-1].content == "done"


async def test_denied_after_resume_async() -> None:
    agent, ran = make_agent(LOOKUP_THEN_REFUND)
    cfg: Any = {"configurable": {"thread_id": "deny"}}
    out = await agent.ainvoke({"messages": [HumanMessage("refund A1")]}, cfg)
    assert out["__interrupt__"][0].value["binding"] == "refund"

    rid = out["__interrupt__"][0].value["request_id"]
    out = await agent.ainvoke(Command(resume={"decision": "deny", "request_id": rid}), cfg)
    (msg,) = tool_messages(out)
    assert msg.status == "error"
    assert isinstance(msg.content, str)
    assert msg.content.startswith(
        'Error (binding_denied): Error: tools.refund({"order_id":"A1","amount_eur":30}) '
        "was not approved"
    )
    assert ("refund", "A1", 30.0) not in ran
    assert out["messages"][-1].content == "done"


def test_a_plain_sandbox_loses_the_graph_context() -> None:
    """Why SandboxedJSTool wraps the approver: ClamBot calls it on a worker thread,
    where LangGraph's runnable context is gone, so interrupt() cannot work there and a
    plain Sandbox with this approver denies every call."""
    refunds: list[str] = []

    def refund(order_id: str) -> str:
        refunds.append(order_id)
        return "ok"

    sb = Sandbox(
        bindings=[binding(refund, effects=("write",))],
        policy=Policy(approve=langgraph_interrupt_approver()),
    )

    def node(state: MessagesState) -> dict[str, Any]:
        res = sb.run("await tools.refund({order_id: 'A'})")
        assert res.error is not None
        return {"messages": [AIMessage(content=res.error.kind)]}

    graph = StateGraph(MessagesState).add_node("n", node).add_edge(START, "n")
    out = graph.compile(checkpointer=InMemorySaver()).invoke(
        {"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "plain"}}
    )
    assert "__interrupt__" not in out
    assert out["messages"][-1].content == "binding_denied"
    assert refunds == []


def test_plain_bindings_can_interrupt_too() -> None:
    """A ClamBot binding runs in a copy of the tool's context: it may call interrupt()."""
    from langgraph.types import interrupt

    def ask(question: str) -> str:
        return str(interrupt(question))

    js = SandboxedJSTool(bindings=[ask])
    model = scripted(
        js_call("'answer: ' + await tools.ask({question: 'color?'})", "c1"),
        AIMessage(content="done"),
    )
    agent = create_agent(model, [js], checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "ask"}}
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg)
    assert out["__interrupt__"][0].value == "color?"
    out = agent.invoke(Command(resume="blue"), cfg)
    (msg,) = tool_messages(out)
    assert msg.content == 'Result (JSON): "answer: blue"'


@pytest.mark.parametrize(
    "answer, expected",
    [
        (True, Answer(Approval.ALLOW_ONCE)),
        (False, Answer(Approval.DENY)),
        ("allow_session", Answer(Approval.ALLOW_SESSION)),
        ("approve", Answer(Approval.ALLOW_ONCE)),
        (" Reject ", Answer(Approval.DENY)),
        (Approval.ALLOW_ONCE, Answer(Approval.ALLOW_ONCE)),
        ({"decision": "allow_once"}, Answer(Approval.ALLOW_ONCE)),
        ({"decision": "deny", "request_id": "rid", "message": "no"}, Answer(Approval.DENY, "no")),
        ({"type": "approve"}, Answer(Approval.ALLOW_ONCE)),
        ({"approved": True}, Answer(Approval.ALLOW_ONCE)),
        ({"decisions": [{"type": "approve"}]}, Answer(Approval.ALLOW_ONCE)),
        (
            {"decisions": [{"type": "reject", "message": "ask first"}]},
            Answer(Approval.DENY, "ask first"),
        ),
    ],
)
def test_parse_answer(answer: Any, expected: Answer) -> None:
    assert parse_answer(answer, "rid") == expected


@pytest.mark.parametrize(
    "answer, says",
    [
        ("maybe", "is not an approval answer"),
        (None, "is not an approval answer"),
        (1, "is not an approval answer"),
        ({"decision": "allow_once", "request_id": "other"}, "is for request 'other'"),
        ({"decisions": [{"type": "edit"}]}, "cannot be edited"),
        ({"decisions": []}, "exactly one decision"),
        ({"what": "yes"}, "holds no decision"),
    ],
)
def test_unclear_answers_are_errors_not_denials(answer: Any, says: str) -> None:
    with pytest.raises(AnswerError, match=says):
        parse_answer(answer, "rid")


def test_allow_session_covers_the_rest_of_the_script_only() -> None:
    """ALLOW_SESSION was kept on the tool object, for every later run in the process
    (every thread, every user). Without sessions it covers the script that asked."""
    asked: list[str] = []

    def human(req: ApprovalRequest) -> Approval:
        asked.append(req.binding)
        return Approval.ALLOW_SESSION

    def write(x: int) -> int:
        return x

    js = SandboxedJSTool(
        bindings=[binding(write, effects=("write",))], policy=Policy(approve=human)
    )
    code = "(await tools.write({x: 1})) + (await tools.write({x: 2})) + (await tools.write({x: 3}))"
    assert js.invoke({"code": code}) == "Result (JSON): 6"
    assert asked == ["write"]
    assert js.invoke({"code": "await tools.write({x: 4})"}) == "Result (JSON): 4"
    assert asked == ["write", "write"]


def test_merge_js_approvals() -> None:
    assert merge_js_approvals(None, {"js": ["refund"]}) == {"js": ["refund"]}
    assert merge_js_approvals({"js": ["refund"]}, {"js": ["email", "refund"]}) == {
        "js": ["email", "refund"]
    }
    assert merge_js_approvals({"js": ["refund"], "other": ["x"]}, {"js": None}) == {"other": ["x"]}
    assert merge_js_approvals({"js": ["refund"]}, None) == {}


async def test_async_approver_runs_in_the_tool_context() -> None:
    seen: list[str] = []

    async def human(req: ApprovalRequest) -> bool:
        from langchain_core.runnables.config import var_child_runnable_config

        cfg = var_child_runnable_config.get()
        seen.append((cfg or {}).get("metadata", {}).get("who", "?"))
        return True

    def write(x: int) -> int:
        return x

    js = SandboxedJSTool(
        bindings=[binding(write, effects=("write",))], policy=Policy(approve=human)
    )
    out = await js.ainvoke({"code": "await tools.write({x: 2})"}, {"metadata": {"who": "me"}})
    assert out == "Result (JSON): 2"
    assert seen == ["me"]


def test_readme_approval_example_runs_and_prints_what_it_says() -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    section = readme.read_text(encoding="utf-8").split("## Human approval through LangGraph")[1]
    example = re.findall(r"````python\n(.*?)````", section, re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(readme), "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == [
        'Allow the script to call tools.refund({"order_id": "A1", "amount_eur": 30})?',
        'Result (JSON): {"refunded":30}',
    ]


def test_approver_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="at least 100"):
        langgraph_interrupt_approver(max_args_chars=10)
    with pytest.raises(ConfigError, match="must be an int"):
        langgraph_interrupt_approver(max_args_chars="4000")  # type: ignore[arg-type]


def test_a_binding_that_asks_then_an_approval_in_one_script() -> None:
    """A binding's own interrupt() and an approval, one after the other in a script:
    each answer goes to its question."""
    from langgraph.types import interrupt

    refunds: list[str] = []

    def ask(question: str) -> str:
        return str(interrupt(question))

    @tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        refunds.append(order_id)
        return "ok"

    js = SandboxedJSTool(
        tools=[refund],
        bindings=[ask],
        effects={"refund": ["write"]},
        policy=Policy(approve=langgraph_interrupt_approver()),
    )
    code = (
        "const id = await tools.ask({question: 'which order?'});\n"
        "await tools.refund({order_id: id})"
    )
    agent = create_agent(
        scripted(js_call(code, "c1"), AIMessage(content="done")), [js], checkpointer=InMemorySaver()
    )
    cfg: Any = {"configurable": {"thread_id": "mixed"}}
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg)
    assert out["__interrupt__"][0].value == "which order?"
    out = agent.invoke(Command(resume="B7"), cfg)
    assert out["__interrupt__"][0].value["args"] == {"order_id": "B7"}
    out = agent.invoke(Command(resume=True), cfg)
    (msg,) = tool_messages(out)
    assert msg.content == 'Result (JSON): "ok"'
    assert refunds == ["B7"]
