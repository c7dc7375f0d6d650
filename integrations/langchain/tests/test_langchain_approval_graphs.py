"""Approvals hold in every documented pattern: create_agent and the hand-built
StateGraph + ToolNode, scripts side by side (one AIMessage) and approvals one after
another (one script), answered bare or by interrupt id, denied, with sessions: each
question is shown once, each approved write runs exactly once, each denied one never.
Real graphs and checkpointers (in memory, SQLite), real sandbox; the model is scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from approval_helpers import (
    PARALLEL,
    PATTERNS,
    SEQUENTIAL,
    SHAPES,
    aanswer_all,
    agent_model,
    answer_all,
    build,
    cfg,
    human,
    make_js,
    make_tools,
    refunds,
    start,
    tool_results,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from lc_helpers import js_call, js_calls
from pydantic import ValidationError

from langchain_clambot import SandboxedJSTool

REFUND = "await tools.refund({order_id: 'A1', amount_eur: 5})"
#: the questions of each shape, and the refunds each makes when all are approved
ASKED = {"parallel": [("P1", 30), ("P2", 30)], "sequential": [("A", 1), ("B", 30)]}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


@pytest.fixture(params=["memory", "sqlite"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySaver()
        return
    conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def asked_in_order(shape: str, asked: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Scripts side by side may ask in either order; one script asks in its own."""
    return sorted(asked) if shape == "parallel" else asked


# -- each approved write runs once, every question is shown once


@pytest.mark.parametrize(
    "pattern, shape, how",
    [
        (pattern, shape, how)
        for pattern in PATTERNS
        for shape in SHAPES
        for how in ("bare", "map")
        # create_agent asks both questions of scripts side by side at once: they are
        # answered by interrupt id (a bare answer is refused there, see below)
        if not (pattern == "agent" and shape == "parallel" and how == "bare")
    ],
)
def test_each_approved_write_runs_once(
    pattern: str, shape: str, how: str, saver: Any, log: Path
) -> None:
    """The README's own pattern ran refund ['P1', 'P1', 'P2'] when resumed with True
    each time, and with {interrupt_id: True} ran P2 twice and never showed P2's
    question."""
    calls = SHAPES[shape]
    graph = build(pattern, make_js(log), saver, *agent_model(pattern, calls))
    out = start(pattern, graph, "t", calls)
    asked, out = answer_all(graph, "t", human(), how, out)

    assert asked_in_order(shape, asked) == ASKED[shape]
    assert sorted(refunds(log)) == sorted(ASKED[shape])
    results = tool_results(out)
    assert [status for status, _ in results.values()] == ["success"] * len(calls)
    if shape == "sequential":
        assert results["s1"][1] == "Result (JSON): [1,30]"


@pytest.mark.parametrize("shape", ["parallel", "sequential"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_denied_write_never_runs(pattern: str, shape: str, saver: Any, log: Path) -> None:
    calls = SHAPES[shape]
    graph = build(pattern, make_js(log), saver, *agent_model(pattern, calls))
    out = start(pattern, graph, "t", calls)
    denied = "P2" if shape == "parallel" else "B"
    asked, out = answer_all(graph, "t", human(deny=[denied]), "map", out)

    assert asked_in_order(shape, asked) == ASKED[shape]
    assert refunds(log) == [r for r in ASKED[shape] if r[0] != denied]
    results = tool_results(out)
    if shape == "parallel":
        assert results["p1"] == ("success", 'Result (JSON): {"refunded":30,"order_id":"P1"}')
        status, content = results["p2"]
    else:
        status, content = results["s1"]
        assert "completed before the error: tools.lookup x1, tools.refund x1." in content
    assert status == "error"
    order, amount = next(r for r in ASKED[shape] if r[0] == denied)
    assert content.startswith(
        f'Error (binding_denied): Error: tools.refund({{"order_id":"{order}",'
        f'"amount_eur":{amount}}}) was not approved'
    )


@pytest.mark.parametrize("checkpointer", ["memory", "async-sqlite"])
@pytest.mark.parametrize("shape", ["parallel", "sequential"])
@pytest.mark.parametrize("pattern", PATTERNS)
async def test_async_graphs_each_approved_write_runs_once(
    pattern: str, shape: str, checkpointer: str, log: Path, tmp_path: Path
) -> None:
    """With ainvoke (an async checkpointer, whose sync API waits for the event loop):
    a ToolNode runs its scripts with asyncio.gather, which ends the task at the first
    script that pauses while the others go on."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    calls = SHAPES[shape]
    async with contextlib.AsyncExitStack() as stack:
        saver: Any = InMemorySaver()
        if checkpointer == "async-sqlite":
            saver = await stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite"))
            )
        graph = build(pattern, make_js(log), saver, *agent_model(pattern, calls))
        first = {"messages": [("user", "go")] if pattern == "agent" else [js_calls(*calls)]}
        out = await graph.ainvoke(first, cfg("a"))
        assert {i.value["tool_call_id"] for i in out["__interrupt__"]} <= {"p1", "p2", "s1"}
        asked, out = await aanswer_all(graph, "a", human(), out)
    assert asked_in_order(shape, asked) == ASKED[shape]
    assert sorted(refunds(log)) == sorted(ASKED[shape])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_identical_scripts_side_by_side_are_two_calls(pattern: str, log: Path) -> None:
    """Two tool calls with the same script ask the same question twice: each answer
    approves its own call (they are told apart by their tool call id)."""
    calls = [(REFUND, "x1"), (REFUND, "x2")]
    graph = build(pattern, make_js(log), InMemorySaver(), *agent_model(pattern, calls))
    out = start(pattern, graph, "t", calls)
    asked, out = answer_all(graph, "t", lambda q: q["tool_call_id"] == "x2", "map", out)
    assert asked == [("A1", 5), ("A1", 5)]
    assert refunds(log) == [("A1", 5)]
    results = tool_results(out)
    assert (results["x1"][0], results["x2"][0]) == ("error", "success")


def test_a_bare_answer_to_two_pending_questions_is_refused(log: Path) -> None:
    """create_agent runs scripts side by side in tasks of their own, which ask at the
    same time: a bare answer would not say which question it answers, and LangGraph
    refuses it; nothing runs."""
    graph = build("agent", make_js(log), InMemorySaver(), *agent_model("agent", PARALLEL))
    out = start("agent", graph, "t", PARALLEL)
    assert len(out["__interrupt__"]) == 2
    with pytest.raises(RuntimeError, match="specify the interrupt id"):
        graph.invoke(Command(resume=True), cfg("t"))
    assert refunds(log) == []


# -- answers: bound to their question, in every accepted shape


def paused(log: Path, code: str, data: Path | None = None, thread: str = "t") -> tuple[Any, Any]:
    """A hand-built graph paused on the question of `code`."""
    graph = build("toolnode", make_js(log, data), InMemorySaver())
    out = start("toolnode", graph, thread, [(code, "c1")])
    assert out["__interrupt__"], out
    return graph, out


@pytest.mark.parametrize(
    "answer",
    [
        {"decisions": [{"type": "approve"}]},
        {"decision": "allow_once"},
        "approve",
        "allow_once",
    ],
)
def test_accepted_answer_shapes(log: Path, answer: Any) -> None:
    """LangChain's HumanInTheLoopMiddleware answer shape was taken as a denial."""
    graph, out = paused(log, REFUND)
    question = out["__interrupt__"][0].value
    assert question["action_requests"] == [
        {
            "name": "refund",
            "args": {"order_id": "A1", "amount_eur": 5},
            "description": question["question"],
        }
    ]
    assert question["review_configs"] == [
        {"action_name": "refund", "allowed_decisions": ["approve", "reject"]}
    ]
    out = graph.invoke(Command(resume=answer), cfg("t"))
    assert refunds(log) == [("A1", 5)]
    assert tool_results(out)["c1"][0] == "success"


def test_a_refusal_with_a_message_reaches_the_model(log: Path) -> None:
    graph, _ = paused(log, REFUND)
    answer = {"decisions": [{"type": "reject", "message": "refunds need a receipt"}]}
    out = graph.invoke(Command(resume=answer), cfg("t"))
    status, content = tool_results(out)["c1"]
    assert status == "error"
    assert "Note: the human refused tools.refund: refunds need a receipt" in content
    assert refunds(log) == []


def test_an_answer_naming_its_request_is_checked(log: Path) -> None:
    graph, out = paused(log, REFUND)
    rid = out["__interrupt__"][0].value["request_id"]
    out = graph.invoke(Command(resume={"decision": "deny", "request_id": rid}), cfg("t"))
    assert tool_results(out)["c1"][0] == "error"
    assert refunds(log) == []

    graph, out = paused(log, REFUND, thread="u")
    with pytest.raises(ValidationError, match="this answer is for request 'other'"):
        graph.invoke(Command(resume={"decision": "allow_once", "request_id": "other"}), cfg("u"))
    assert refunds(log) == []
    out = graph.invoke(Command(resume={"decision": "allow_once", "request_id": rid}), cfg("u"))
    assert refunds(log) == [("A1", 5)]


@pytest.mark.parametrize(
    "answer, says",
    [
        (
            {"decisions": [{"type": "edit", "edited_action": {"name": "refund", "args": {}}}]},
            "edit",
        ),
        ({"decisions": [{"type": "approve"}, {"type": "approve"}]}, "exactly one decision"),
        ("maybe", "is not an approval answer"),
        (1, "is not an approval answer"),
        ({"note": "ok"}, "holds no decision"),
    ],
)
def test_an_answer_that_is_not_one_fails_the_resume_and_can_be_given_again(
    log: Path, answer: Any, says: str
) -> None:
    """Unclear answers were silently taken as denials. Now the resume fails with a
    clear error, nothing is recorded, and the question can be answered again."""
    graph, out = paused(log, REFUND)
    question = out["__interrupt__"][0]
    assert "anyOf" in (question.response_schema or {})
    with pytest.raises(ValidationError, match=says):
        graph.invoke(Command(resume=answer), cfg("t"))
    assert refunds(log) == []
    state = graph.get_state(cfg("t"))
    assert [i.value["args"] for i in state.interrupts] == [{"order_id": "A1", "amount_eur": 5}]
    out = graph.invoke(Command(resume=True), cfg("t"))
    assert refunds(log) == [("A1", 5)]
    assert tool_results(out)["c1"][0] == "success"


# -- an answer never approves a different call (issue 11, item 1)

CHANGING = (
    "const o = await tools.lookup({order_id: 'A1'});\n"
    "await tools.refund({order_id: 'A1', amount_eur: o.amount_eur})"
)


def test_an_answer_is_not_applied_to_a_call_that_changed_on_resume(
    tmp_path: Path, log: Path
) -> None:
    """Worker 1 pauses on refund(A1, 5); the data changes; a second SandboxedJSTool on
    the same SQLite checkpointer resumes with True: it must ask about 5000, not run it."""
    data = tmp_path / "orders.json"
    data.write_text(json.dumps({"A1": 5}))
    conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
    try:
        first = build("toolnode", make_js(log, data), SqliteSaver(conn))
        out = start("toolnode", first, "t", [(CHANGING, "c1")])
        assert [i.value["args"]["amount_eur"] for i in out["__interrupt__"]] == [5]

        data.write_text(json.dumps({"A1": 5000}))
        second = build("toolnode", make_js(log, data), SqliteSaver(conn))
        out = second.invoke(Command(resume=True), cfg("t"))
        assert refunds(log) == []
        (intr,) = out["__interrupt__"]
        assert intr.value["args"] == {"order_id": "A1", "amount_eur": 5000}
        assert '"amount_eur": 5000' in intr.value["question"]

        out = second.invoke(Command(resume=False), cfg("t"))
        assert refunds(log) == []
        assert tool_results(out)["c1"][0] == "error"
    finally:
        conn.close()


# -- the question shows the whole call (issue 11, item 3)


def test_the_question_shows_every_argument(log: Path) -> None:
    """The question was cut at 500 characters: the amount after a long field was not
    shown while the human approved."""
    note = "x" * 700
    code = f"await tools.refund({{note: '{note}', order_id: 'A1', amount_eur: 5000}})"
    graph = build("toolnode", make_js(log), InMemorySaver())
    out = start("toolnode", graph, "t", [(code, "c1")])
    question = out["__interrupt__"][0].value
    assert question["args"] == {"note": note, "order_id": "A1", "amount_eur": 5000}
    assert question["question"] == (
        f'Allow the script to call tools.refund({{"note": "{note}", "order_id": "A1", '
        '"amount_eur": 5000})?'
    )


def test_hidden_characters_are_escaped_in_the_question(log: Path) -> None:
    """A person reads the question: bidi overrides and terminal escapes are written as
    JSON escapes there, while `args` keeps the exact value."""
    code = "await tools.refund({order_id: 'A1\\u202e0005\\u001b[2J', amount_eur: 5})"
    graph = build("toolnode", make_js(log), InMemorySaver())
    question = start("toolnode", graph, "t", [(code, "c1")])["__interrupt__"][0].value
    assert question["args"]["order_id"] == "A1\u202e0005\x1b[2J"
    assert '"order_id": "A1\\u202e0005\\u001b[2J"' in question["question"]
    assert "\u202e" not in question["question"] and "\x1b" not in question["question"]


def test_arguments_too_long_to_check_are_refused_not_asked(log: Path) -> None:
    code = f"await tools.refund({{note: '{'x' * 5000}', order_id: 'A1', amount_eur: 5}})"
    graph = build("toolnode", make_js(log), InMemorySaver())
    out = start("toolnode", graph, "t", [(code, "c1")])
    assert "__interrupt__" not in out
    status, content = tool_results(out)["c1"]
    assert status == "error"
    assert "too long for the human who must approve the call to check (at most 4,000)" in content
    assert refunds(log) == []


# -- allow for session (issue 10, item 5)


def test_allow_session_in_one_thread_never_approves_another_threads_calls(log: Path) -> None:
    """ "Allow for session" in thread user-A let user B's refund run with no question.
    Without sessions it covers the rest of the script that asked."""
    code = (
        "const a = await tools.refund({order_id: 'A1', amount_eur: 1});\n"
        "const b = await tools.refund({order_id: 'A2', amount_eur: 2});\n[a, b].length"
    )
    js = make_js(log)
    graph = build("toolnode", js, InMemorySaver())
    out = start("toolnode", graph, "user-A", [(code, "c1")])
    asked, out = answer_all(graph, "user-A", human(allow="allow_session"), "bare", out)
    assert asked == [("A1", 1)]  # A2 went ahead unasked: same script
    assert refunds(log) == [("A1", 1), ("A2", 2)]

    out = start("toolnode", graph, "user-B", [(REFUND, "c2")])
    assert [i.value["args"] for i in out["__interrupt__"]] == [{"order_id": "A1", "amount_eur": 5}]
    out = graph.invoke(Command(resume=False), cfg("user-B"))
    assert refunds(log) == [("A1", 1), ("A2", 2)]

    out = graph.invoke({"messages": [js_call(REFUND, "c3")]}, cfg("user-A"))
    assert out["__interrupt__"], "a new script of thread A asks again"
    assert out["__interrupt__"][0].value["allow_session"] == "script"


def test_allow_session_with_sessions_covers_the_thread_only(log: Path) -> None:
    js = make_js(log, sessions=True)
    saver = InMemorySaver()
    graph = build("toolnode", js, saver)
    start("toolnode", graph, "user-A", [(REFUND, "c1")])
    graph.invoke(Command(resume="allow_session"), cfg("user-A"))

    out = graph.invoke({"messages": [js_call(REFUND, "c2")]}, cfg("user-B"))
    assert out["__interrupt__"], "thread B is asked"
    assert out["__interrupt__"][0].value["allow_session"] == "thread"
    graph.invoke(Command(resume=False), cfg("user-B"))
    assert graph.get_state(cfg("user-A")).values["js_approvals"] == {"run_js_sandboxed": ["refund"]}

    js.close_sessions()  # as on a worker that never saw the thread: only the checkpoint
    out = graph.invoke({"messages": [js_call(REFUND, "c3")]}, cfg("user-A"))
    assert "__interrupt__" not in out
    assert refunds(log) == [("A1", 5), ("A1", 5)]

    graph.update_state(cfg("user-A"), {"js_approvals": None})
    out = graph.invoke({"messages": [js_call(REFUND, "c4")]}, cfg("user-A"))
    assert out["__interrupt__"], "asked again once the grant is forgotten"


def test_allow_session_stands_when_the_script_then_fails(log: Path) -> None:
    graph = build("toolnode", make_js(log, sessions=True), InMemorySaver())
    code = REFUND + "; null.x"
    start("toolnode", graph, "t", [(code, "c1")])
    out = graph.invoke(Command(resume="allow_session"), cfg("t"))
    status, content = tool_results(out)["c1"]
    assert status == "error" and content.startswith("Error (runtime)")
    out = graph.invoke({"messages": [js_call(REFUND, "c2")]}, cfg("t"))
    assert "__interrupt__" not in out
    assert refunds(log) == [("A1", 5), ("A1", 5)]


# -- sessions=True


@pytest.mark.parametrize("shape", ["parallel", "sequential"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_session_tools_run_each_approved_write_once(pattern: str, shape: str, log: Path) -> None:
    calls = SHAPES[shape]
    js = make_js(log, sessions=True)
    graph = build(pattern, js, InMemorySaver(), *agent_model(pattern, calls))
    out = start(pattern, graph, "t", calls)
    asked, out = answer_all(graph, "t", human(deny=["P2"]), "map", out)
    expected = [r for r in ASKED[shape] if r[0] != "P2"]
    assert asked_in_order(shape, asked) == ASKED[shape]
    assert sorted(refunds(log)) == sorted(expected)
    assert out["js_session"]["run_js_sandboxed"]["seq"] == 1  # one script succeeded


def test_a_plain_tool_call_after_the_scripts_is_unaffected(log: Path) -> None:
    """A thread goes on normally after its approvals: the next step starts afresh."""
    graph = build("toolnode", make_js(log), InMemorySaver())
    out = start("toolnode", graph, "t", SEQUENTIAL)
    answer_all(graph, "t", human(), "bare", out)
    out = graph.invoke({"messages": [js_call(SEQUENTIAL[0][0], "again")]}, cfg("t"))
    assert out["__interrupt__"][0].value["args"] == {"order_id": "A", "amount_eur": 1}


async def test_a_pausing_toolnode_waits_for_its_other_scripts(log: Path) -> None:
    """With ainvoke a ToolNode runs its scripts with asyncio.gather, which ends the task
    as soon as one script pauses while the others go on, after the graph returned. The
    script that pauses now waits for the others (they stop at their next tool call)."""
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.tools import tool
    from langgraph.errors import GraphInterrupt

    read_started, go_on, paused = asyncio.Event(), asyncio.Event(), asyncio.Event()
    reads: list[int] = []

    @tool
    async def slow_read(x: int) -> int:
        """Read something slowly."""
        read_started.set()
        await go_on.wait()
        reads.append(x)
        return x

    @tool
    async def wait_for_read() -> bool:
        """Wait until the other script reads."""
        await read_started.wait()
        return True

    class OnPause(AsyncCallbackHandler):
        async def on_tool_error(self, error: BaseException, **kwargs: Any) -> None:
            if isinstance(error, GraphInterrupt):
                paused.set()

    js = make_js(log)
    js = SandboxedJSTool(
        tools=[*make_tools(log), slow_read, wait_for_read],
        effects={"refund": ["write"]},
        policy=js.policy,
        limits=js.limits,
    )
    graph = build("toolnode", js, InMemorySaver())
    calls = [
        ("await tools.wait_for_read({}); await tools.refund({order_id: 'P1', amount_eur: 1})", "a"),
        ("await tools.slow_read({x: 1}); await tools.slow_read({x: 2})", "b"),
    ]
    config = {**cfg("t"), "callbacks": [OnPause()]}
    run = asyncio.ensure_future(graph.ainvoke({"messages": [js_calls(*calls)]}, config))
    await paused.wait()
    done, _ = await asyncio.wait({run}, timeout=1.0)
    assert not done, "the graph returned while a script of its paused task still ran"
    go_on.set()
    out = await run
    assert [i.value["args"]["order_id"] for i in out["__interrupt__"]] == ["P1"]
    assert reads == [1]  # the read in flight ended; the next call was not made


@pytest.mark.parametrize("sessions", [False, True])
def test_nothing_of_a_task_run_is_kept_once_it_ended(log: Path, sessions: bool) -> None:
    """A server runs many threads: what a task run shares between its scripts (its
    questions, answers, completed writes) goes with the run, paused, resumed or failed
    (a session tool's live sessions outlive their runs, and must not keep them)."""
    import gc
    import weakref

    from langchain_clambot._ledger import TaskRun

    gc.collect()
    before = weakref.WeakSet(o for o in gc.get_objects() if isinstance(o, TaskRun))
    js = make_js(log, sessions=sessions)
    graph = build("toolnode", js, InMemorySaver())
    for i in range(5):
        answer_all(graph, f"t{i}", human(), "map", start("toolnode", graph, f"t{i}", PARALLEL))
    start("toolnode", graph, "bad", PARALLEL)
    with pytest.raises(ValidationError):
        graph.invoke(Command(resume="maybe"), cfg("bad"))
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, TaskRun) and o not in before]
    assert kept == []
    js.close_sessions()
