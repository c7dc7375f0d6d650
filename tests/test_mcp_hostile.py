"""MCP servers that misbehave: one that never answers, answers with 100 MB, sends
malformed JSON-RPC, or dies mid-call. Each ends as a structured error within the run's
deadline, the connection stays usable (or reconnects), and nothing is left behind:
no call in flight, no stray thread, no server process but the live one, no zombie.

Over stdio the server is tests/mcp_hostile_server.py, which writes the bytes itself
(and logs what it receives); over streamable HTTP it is the FastMCP test server."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_helpers import (
    HOSTILE,
    PATIENCE_S,
    HttpServer,
    alive,
    children,
    mcp_threads,
    peak_rss,
    peak_rss_reset,
    wait_until,
)

from clambot_tools import Limits, Sandbox
from clambot_tools.mcp import MCPConnection, MCPConnectionError

TIMEOUT_S = 2.0
#: how far past its time limit a run may end on this (busy, shared) machine
SLACK_S = 3.0
_MIB = 1 << 20


class Hostile:
    """A connection to the hostile stdio server, and what it received."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.conn = MCPConnection(command=sys.executable, args=[HOSTILE, str(log)], name="hostile")
        self.sb = Sandbox(bindings=self.conn.bindings(), limits=Limits(timeout_s=TIMEOUT_S))

    def received(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def call_ids(self, tool: str) -> list[object]:
        return [
            m["id"]
            for m in self.received()
            if m.get("method") == "tools/call"
            and isinstance(params := m.get("params"), dict)
            and params.get("name") == tool
        ]

    def cancelled_ids(self) -> list[object]:
        return [
            m["params"]["requestId"]
            for m in self.received()
            if m.get("method") == "notifications/cancelled"
        ]

    def still_works(self) -> None:
        res = self.sb.run("await tools.echo({})")
        assert res.ok and res.value == "ok", res.error


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    h = Hostile(tmp_path_factory.mktemp("hostile") / "received.jsonl")
    h.still_works()  # warm: the sandbox's own threads exist before we count
    yield h
    h.conn.close()


def timed(sb: Sandbox, code: str) -> tuple[float, object]:
    t0 = time.monotonic()
    res = sb.run(code)
    return time.monotonic() - t0, res


def test_a_server_that_never_answers_ends_at_the_deadline_and_is_told(hostile: Hostile) -> None:
    took, res = timed(hostile.sb, "await tools.silent({})")
    assert res.error is not None and res.error.kind == "timeout"  # type: ignore[attr-defined]
    assert TIMEOUT_S <= took < TIMEOUT_S + SLACK_S
    call_id = hostile.call_ids("silent")[-1]
    assert wait_until(lambda: call_id in hostile.cancelled_ids())
    assert wait_until(lambda: hostile.conn.in_flight == 0)
    hostile.still_works()


def test_a_100_mb_answer_fails_at_once_without_being_held(hostile: Hostile) -> None:
    before = peak_rss_reset()
    took, res = timed(hostile.sb, "await tools.flood({})")
    err = res.error  # type: ignore[attr-defined]
    assert err is not None and err.kind == "binding_failed"
    assert "more than 4194304 bytes" in err.message and "dropped unread" in err.message
    assert took < TIMEOUT_S  # failed at once: not left to time out
    hostile.still_works()  # the rest of the 100 MB line was read past
    grown = peak_rss() - before
    assert grown < 48 * _MIB, f"the host grew by {grown / _MIB:.0f} MiB reading the answer"


def test_malformed_answers_fail_their_call_at_once(hostile: Hostile) -> None:
    for tool, words in (
        ("malformed", "malformed answer"),  # broken JSON carrying the request's id
        ("wrong_shape", "invalid result for wrong_shape"),  # JSON-RPC, not a tool result
    ):
        took, res = timed(
            hostile.sb, f"try {{ await tools.{tool}({{}}) }} catch (e) {{ e.message }}"
        )
        assert res.ok and words in res.value, (tool, res)  # type: ignore[attr-defined]
        assert took < TIMEOUT_S
        hostile.still_works()


def test_a_line_that_is_not_json_rpc_is_bounded_by_the_deadline(hostile: Hostile) -> None:
    took, res = timed(hostile.sb, "await tools.garbage({})")
    assert res.error is not None and res.error.kind == "timeout"  # type: ignore[attr-defined]
    assert took < TIMEOUT_S + SLACK_S
    hostile.still_works()


def test_a_server_that_dies_mid_call_fails_it_and_the_next_call_reconnects(
    hostile: Hostile,
) -> None:
    old = hostile.conn.server_pid
    assert old is not None
    # die is read-only: the policy retries it (3 attempts), each on a new server
    took, res = timed(hostile.sb, "await tools.die({})")
    err = res.error  # type: ignore[attr-defined]
    assert err is not None and err.kind == "binding_failed"
    assert "broke during the call" in err.message
    assert took < TIMEOUT_S + SLACK_S
    hostile.still_works()
    new = hostile.conn.server_pid
    assert new is not None and new != old
    assert not alive(old)
    # every server that died was reaped; the live one is the only child left
    assert wait_until(lambda: set(children()) == {new}), children()


def test_arun_leaves_no_task_on_the_callers_loop(hostile: Hostile) -> None:
    async def main() -> tuple[str, int]:
        res = await hostile.sb.arun("await tools.silent({})")
        assert res.error is not None
        me = asyncio.current_task()
        for _ in range(int(PATIENCE_S / 0.02)):  # the cancelled call unwinds at once
            if asyncio.all_tasks() == {me}:
                break
            await asyncio.sleep(0.02)
        return res.error.kind, len(asyncio.all_tasks() - {me})

    assert asyncio.run(main()) == ("timeout", 0)
    call_id = hostile.call_ids("silent")[-1]
    assert wait_until(lambda: call_id in hostile.cancelled_ids())
    assert wait_until(lambda: hostile.conn.in_flight == 0)


def test_nothing_is_left_behind_between_runs_or_after_close(hostile: Hostile) -> None:
    threads = {t.name for t in threading.enumerate()}
    for tool in ("silent", "flood", "garbage", "malformed", "echo"):
        hostile.sb.run(f"await tools.{tool}({{}})")
    assert wait_until(lambda: hostile.conn.in_flight == 0)
    assert {t.name for t in threading.enumerate()} == threads
    pid = hostile.conn.server_pid
    assert set(children()) == {pid}
    hostile.conn.close()
    assert children() == {}
    assert mcp_threads() == []


def test_a_server_that_never_completes_the_handshake_is_a_clear_error(tmp_path: Path) -> None:
    c = MCPConnection(
        command=sys.executable,
        args=[HOSTILE, str(tmp_path / "log.jsonl"), "--mute"],
        name="mute",
        connect_timeout_s=1.0,
        connect_attempts=2,
    )
    t0 = time.monotonic()
    with pytest.raises(MCPConnectionError, match=r"mute.*2 attempts.*handshake in time"):
        c.connect()
    assert time.monotonic() - t0 < 2 * 1.0 + 2 + SLACK_S
    assert children() == {}  # both attempts' processes were stopped
    c.close()


def test_close_stops_a_server_that_ignores_eof_and_sigterm_and_its_children(
    tmp_path: Path,
) -> None:
    c = MCPConnection(
        command=sys.executable, args=[HOSTILE, str(tmp_path / "log.jsonl"), "--stubborn"]
    )
    server = c.connect().server_pid
    grandchild = int(c.call("child_pid"))
    assert server is not None and alive(server) and alive(grandchild)
    t0 = time.monotonic()
    c.close()  # stdin closed, 2 s, SIGTERM (ignored), 1 s, SIGKILL to the group
    assert time.monotonic() - t0 < 4 + SLACK_S
    assert not alive(server) and server not in children()
    assert wait_until(lambda: not alive(grandchild))


# -- over streamable HTTP (the FastMCP test server)


@pytest.fixture(scope="module")
def http_conn() -> Iterator[MCPConnection]:
    server = HttpServer()
    with MCPConnection(url=server.url, max_message_bytes=2 * _MIB) as c:
        yield c
    server.stop()


def test_http_a_tool_that_hangs_ends_at_the_deadline(http_conn: MCPConnection) -> None:
    sb = Sandbox(bindings=http_conn.bindings(), limits=Limits(timeout_s=TIMEOUT_S))
    took, res = timed(sb, "await tools.hang({})")
    assert res.error is not None and res.error.kind == "timeout"  # type: ignore[attr-defined]
    assert took < TIMEOUT_S + SLACK_S
    assert wait_until(lambda: http_conn.in_flight == 0)
    assert sb.run("await tools.echo({text: 'next'})").value == "next"


def test_http_an_answer_over_the_cap_fails_at_once(http_conn: MCPConnection) -> None:
    sb = Sandbox(bindings=http_conn.bindings(), limits=Limits(timeout_s=10))
    res = sb.run("await tools.flood({mib: 8})")
    err = res.error
    assert err is not None and err.kind == "binding_failed"
    assert "more than 2097152 bytes" in err.message, err.message
    assert sb.run("await tools.echo({text: 'next'})").value == "next"


def test_http_json_answer_over_the_cap_fails_at_once() -> None:
    server = HttpServer("--json")
    try:
        with MCPConnection(url=server.url, max_message_bytes=2 * _MIB) as c:
            sb = Sandbox(bindings=c.bindings(), limits=Limits(timeout_s=10))
            res = sb.run("await tools.flood({mib: 8})")
            err = res.error
            assert err is not None and err.kind == "binding_failed"
            assert "more than 2097152 bytes" in err.message, err.message
            assert sb.run("await tools.echo({text: 'next'})").value == "next"
    finally:
        server.stop()


def test_http_a_server_that_dies_mid_call_is_an_error_then_a_reconnect() -> None:
    server = HttpServer()
    try:
        with MCPConnection(url=server.url, connect_attempts=1, connect_timeout_s=5) as c:
            sb = Sandbox(bindings=c.bindings(), limits=Limits(timeout_s=10))
            res = sb.run("await tools.die({})")
            assert res.error is not None and res.error.kind == "binding_failed"
            server.process.wait(30)
            down = sb.run("await tools.echo({text: 'x'})")
            assert down.error is not None and "cannot connect" in down.error.message
            server.stop()  # it died: reap it and close its pipe
            server = HttpServer(port=server.port)  # the same endpoint, back again
            back = sb.run("await tools.echo({text: 'back'})")
            assert back.ok and back.value == "back", back.error
    finally:
        server.stop()
