"""The sessions a SandboxedJSTool keeps in a LangGraph checkpoint are signed: state
edited in the checkpoint store, or crafted to exhaust memory, ends as a clear tool
error (and the graph goes on), and only workers given the same key share a thread's
session. Real parts only: create_agent, ToolNode, SQLite and in-memory checkpointers,
the sandbox; the chat model is scripted."""

from __future__ import annotations

import base64
import functools
import json
import sqlite3
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from clambot_tools import ConfigError, Sandbox, SnapshotError, local_snapshot_key
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from lc_helpers import js_call, scripted, session_agent

NAME = "run_js_sandboxed"
KEY = b"a key every worker is given...."
MAGIC = b"CLAMBOT-SNAPSHOT\n"


def cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def tool_messages(agent: Any, thread: str) -> list[ToolMessage]:
    """Run one turn of `thread`; its ToolMessages."""
    before = len(agent.get_state(cfg(thread)).values.get("messages", []))
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg(thread))
    return [m for m in out["messages"][before:] if isinstance(m, ToolMessage)]


def stored_snapshot(agent: Any, thread: str) -> tuple[dict[str, Any], bytes]:
    record = agent.get_state(cfg(thread)).values["js_session"][NAME]
    return record, base64.b64decode(record["snapshot"])


def replace_record(agent: Any, thread: str, snapshot: bytes, seq: int) -> None:
    """What someone with write access to the checkpoint store can do."""
    forged = {"snapshot": base64.b64encode(snapshot).decode(), "rev": "forged", "seq": seq}
    agent.update_state(cfg(thread), {"js_session": {NAME: forged}})


SESSION_ERROR = "Error (session): the JavaScript session of this conversation could not be"


@pytest.mark.parametrize("forgery", ["own snapshot", "guessed key", "one bit"])
def test_a_session_edited_in_the_checkpoint_store_is_a_tool_error(
    tmp_path: Path, forgery: str
) -> None:
    conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        first = session_agent(scripted(js_call("let price = 5", "c1"), AIMessage("ok")), saver)
        assert [m.status for m in tool_messages(first, "t")] == ["success"]
        record, snap = stored_snapshot(first, "t")
        # Someone who can write the store makes a session of their own with the same
        # public library (a price of their choosing), signs it with a key they guess,
        # or changes one bit of the real one.
        if forgery == "one bit":
            edited = bytearray(snap)
            edited[len(edited) // 2] ^= 0x01
            forged = bytes(edited)
        else:
            key = None if forgery == "own snapshot" else b"a guess at the key, 32 bytes...."
            with Sandbox(snapshot_key=key).session() as s:
                s.run("let price = 5000")
                forged = s.snapshot()
        replace_record(first, "t", forged, record["seq"] + 1)

        # Another worker (no live session: it restores from the checkpoint).
        model = scripted(js_call("price * 1000", "c2"), AIMessage("the session is unreadable"))
        worker = session_agent(model, saver)
        (msg,) = tool_messages(worker, "t")
        assert msg.status == "error", msg.content
        assert str(msg.content).startswith(SESSION_ERROR)
        says = "is not signed" if forgery == "own snapshot" else "does not match"
        assert says in str(msg.content)
    finally:
        conn.close()


@functools.cache
def zlib_bomb_snapshot(mib: int) -> bytes:
    """An unsigned snapshot whose header is right for the session tool's Sandbox and
    whose payload inflates to `mib` MiB (about 1 KB per MiB)."""
    with Sandbox().session() as s:
        real = s.snapshot()
    hlen = int.from_bytes(real[len(MAGIC) : len(MAGIC) + 4], "little")
    header = json.loads(real[len(MAGIC) + 4 : len(MAGIC) + 4 + hlen])
    c = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    stream = b"".join(c.compress(zeros) for _ in range(mib)) + c.flush()
    payload = (1).to_bytes(4, "little") + len(stream).to_bytes(4, "little")
    payload += (100).to_bytes(4, "little") + stream
    head = json.dumps(header).encode()
    return MAGIC + len(head).to_bytes(4, "little") + head + payload


@pytest.mark.parametrize("signed", [True, False], ids=["default key", "unsigned header"])
def test_a_zlib_bomb_in_the_checkpoint_is_a_tool_error_in_bounded_memory(signed: bool) -> None:
    bomb = zlib_bomb_snapshot(256)
    if signed:  # claims a signature it does not have
        m = len(MAGIC)
        hlen = int.from_bytes(bomb[m : m + 4], "little")
        header = json.loads(bomb[m + 4 : m + 4 + hlen])
        head = json.dumps({**header, "mac": "hmac-sha256"}).encode()
        bomb = MAGIC + len(head).to_bytes(4, "little") + head + bomb[m + 4 + hlen :] + bytes(32)
    saver = InMemorySaver()
    agent = session_agent(
        scripted(js_call("1 + 1", "c1"), AIMessage("ok"), js_call("2", "c2"), AIMessage("ok")),
        saver,
    )
    assert [m.status for m in tool_messages(agent, "b")] == ["success"]
    replace_record(agent, "b", bomb, 99)
    agent2 = session_agent(scripted(js_call("2", "c2"), AIMessage("ok")), saver)
    tracemalloc.start()
    try:
        (msg,) = tool_messages(agent2, "b")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert msg.status == "error" and str(msg.content).startswith(SESSION_ERROR)
    assert ("does not match" if signed else "is not signed") in str(msg.content)
    assert peak < 48 << 20  # the bomb would inflate to 256 MiB


def test_workers_with_the_same_key_share_a_thread_and_others_cannot() -> None:
    saver = InMemorySaver()
    one = session_agent(
        scripted(js_call("let total = 20", "c1"), AIMessage("ok")), saver, snapshot_key=KEY
    )
    assert [m.status for m in tool_messages(one, "w")] == ["success"]
    two = session_agent(
        scripted(js_call("total + 22", "c2"), AIMessage("ok")), saver, snapshot_key=KEY
    )
    assert [m.content for m in tool_messages(two, "w")] == ["Result (JSON): 42"]
    stranger = session_agent(
        scripted(js_call("total", "c3"), AIMessage("ok")),
        saver,
        snapshot_key=b"some other worker's key, 32 byte",
    )
    (msg,) = tool_messages(stranger, "w")
    assert msg.status == "error" and "made with another key" in str(msg.content)
    local = session_agent(scripted(js_call("total", "c4"), AIMessage("ok")), saver)
    (msg,) = tool_messages(local, "w")  # the default (local) key is another key too
    assert msg.status == "error" and "made with another key" in str(msg.content)


def test_the_default_key_is_this_users_local_key() -> None:
    agent = session_agent(scripted(js_call("let n = 1", "c1"), AIMessage("ok")), InMemorySaver())
    tool_messages(agent, "d")
    _, snap = stored_snapshot(agent, "d")
    with Sandbox(snapshot_key=local_snapshot_key()).restore(snap) as s:
        assert s.run("n + 1").value == 2
    with pytest.raises(SnapshotError, match="signed"):
        Sandbox().restore(snap)


def test_a_short_snapshot_key_is_refused() -> None:
    from langchain_clambot import SandboxedJSTool

    with pytest.raises(ConfigError, match="at least 16 bytes"):
        SandboxedJSTool(sessions=True, snapshot_key=b"short")


def test_without_a_private_directory_the_key_is_this_process_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # others could write it: no secret is kept there
    monkeypatch.setenv("CLAMBOT_CACHE_DIR", str(shared))
    model = scripted(
        js_call("let n = 1", "c1"), AIMessage("ok"), js_call("n + 1", "c2"), AIMessage("ok")
    )
    with caplog.at_level("WARNING", logger="langchain_clambot"):
        agent = session_agent(model, InMemorySaver())
    assert "signed with a key of this process only" in caplog.text
    assert [m.status for m in tool_messages(agent, "p")] == ["success"]
    agent.nodes["tools"].bound.tools_by_name[NAME].close_sessions()  # restore from the state
    assert [m.content for m in tool_messages(agent, "p")] == ["Result (JSON): 2"]
    _, snap = stored_snapshot(agent, "p")
    with pytest.raises(SnapshotError, match="signed"):
        Sandbox().restore(snap)
