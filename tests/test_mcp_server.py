"""`clambot mcp` over stdio: a real server process driven by the MCP SDK's ClientSession,
fronting the test MCP server (tests/mcp_server.py) through ``[mcp.notes]``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client as SdkClient
from mcp.client.stdio import StdioServerParameters
from mcp_helpers import PATIENCE_S, alive, wait_until
from mcp_serving import TOOL, Client, accept, clambot_mcp, refuse, stdio, text, write_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp-server")
    (path / "data").mkdir()
    return path


@pytest.fixture(scope="module")
def config(workspace: Path) -> Path:
    return write_config(
        workspace,
        '[limits]\ntimeout_s = 3\n[files]\nroot = "data"\nwrite = true\n'
        '[audit]\npath = "audit.jsonl"\n',
    )


@pytest.fixture(scope="module")
def mcp(config: Path) -> Iterator[Client]:
    """One `clambot mcp --config sandbox.toml` over stdio, with a client that can
    answer elicitations, for the module's tests."""
    c = Client(stdio("--config", str(config)))
    yield c
    c.close()


def notes(c: Client) -> list[str]:
    res = c.call("(await tools.notes()).result")
    assert not res.is_error, text(res)
    value: list[str] = res.structured_content["value"]  # type: ignore[index]
    return value


# -- the tool


def test_one_tool_whose_description_declares_the_granted_bindings(mcp: Client) -> None:
    (tool,) = mcp.tools()
    assert tool.name == TOOL
    assert tool.input_schema["required"] == ["code"]
    desc = tool.description or ""
    assert "JavaScript" in desc and "3 s per run" in desc and "Each run starts fresh" in desc
    # the standard bindings and the fronted server's tools, in TypeScript
    assert "fs_write_text(args: {" in desc
    assert "lookup(args: {\n    city: string;" in desc
    # this client can approve: writes ask
    assert "/** Add a note (no annotations: a write). (needs approval) */" in desc
    assert tool.annotations is not None and tool.annotations.destructive_hint is True


def test_a_script_that_computes_returns_structured_content_and_text(mcp: Client) -> None:
    res = mcp.call("console.log('summing'); [1, 2, 3].reduce((a, b) => a + b, 0) * 7")
    assert res.is_error is False
    data = res.structured_content
    assert data is not None
    assert data["ok"] is True and data["value"] == 42
    assert data["logs"] == [{"level": "log", "message": "summing"}]
    assert "42" in text(res) and "summing" in text(res)


def test_a_failing_script_is_an_error_result_naming_the_line(mcp: Client) -> None:
    res = mcp.call("const order = {id: 1};\nconst total = order.lines.length;\ntotal")
    assert res.is_error is True
    data = res.structured_content
    assert data is not None and data["ok"] is False
    assert data["error"]["kind"] == "runtime" and data["error"]["line"] == 2
    assert "line 2" in text(res) and "TypeError" in text(res)
    assert "order.lines.length" in text(res)  # the failing line, to repair from


def test_a_script_in_markdown_fences_runs_and_its_lines_are_the_fences(mcp: Client) -> None:
    ok = mcp.call("```javascript\nconst x = 6;\nx * 7\n```")
    assert ok.structured_content["value"] == 42  # type: ignore[index]
    failed = mcp.call("```js\nconst a = 1;\na.b.c\n```")
    assert failed.structured_content["error"]["line"] == 2  # type: ignore[index]
    assert "line 2" in text(failed)


def test_a_script_calls_the_fronted_servers_tools(mcp: Client) -> None:
    res = mcp.call(
        "const days = await Promise.all(['Paris', 'Oslo'].map(city => tools.lookup({city})));"
        "const e = await tools.echo({text: 'hé'});"
        "({temps: days.map(d => d.temp_c), e})"
    )
    assert res.is_error is False, text(res)
    assert res.structured_content is not None
    assert res.structured_content["value"] == {"temps": [22.5, 22.5], "e": "hé"}
    failed = mcp.call("await tools.fail({message: 'no such city'})")
    assert failed.is_error is True and "no such city" in text(failed)


def test_a_request_without_a_script_is_refused_and_the_server_goes_on(mcp: Client) -> None:
    for bad in (None, 42, ["1+1"]):
        res = mcp.call(bad)
        assert res.is_error is True and "takes one argument, code" in text(res)
    extra = mcp.call("1", mode="fast")
    assert extra.is_error is True
    assert mcp.call("1+1").structured_content["value"] == 2  # type: ignore[index]


# -- approvals through elicitation


def test_an_approved_write_runs_and_the_user_saw_the_call(mcp: Client) -> None:
    mcp.answer = accept()
    mcp.asked.clear()
    res = mcp.call("await tools.add_note({text: 'buy milk'})")
    assert res.is_error is False, text(res)
    assert "buy milk" in notes(mcp)
    (asked,) = mcp.asked
    assert "tools.add_note" in asked and '"text": "buy milk"' in asked


@pytest.mark.parametrize("answer", [refuse("decline"), refuse("cancel"), accept(allow=False)])
def test_a_refused_write_does_not_run(mcp: Client, answer: object) -> None:
    mcp.answer = answer  # type: ignore[assignment]
    before = notes(mcp)
    res = mcp.call("try { await tools.add_note({text: 'refused'}) } catch (e) { e.message }")
    assert res.is_error is False
    assert res.structured_content is not None
    assert "was not approved" in res.structured_content["value"]
    assert notes(mcp) == before
    uncaught = mcp.call("await tools.delete_notes()")
    assert uncaught.is_error is True
    assert uncaught.structured_content["error"]["kind"] == "binding_denied"  # type: ignore[index]
    assert notes(mcp) == before


def test_what_the_user_is_shown_is_inert(mcp: Client) -> None:
    mcp.answer = refuse()
    mcp.asked.clear()
    mcp.call("await tools.add_note({text: 'a\\u001b]0;pwned\\u0007b\\u202e'})")
    (asked,) = mcp.asked
    assert "\x1b" not in asked and "\u202e" not in asked and "\\u001b" in asked


def test_a_client_that_cannot_elicit_gets_writes_refused(config: Path, mcp: Client) -> None:
    before = notes(mcp)
    plain = Client(stdio("--config", str(config)), elicits=False)
    try:
        (tool,) = plain.tools()
        assert "add_note" in (tool.description or "")
        assert "add_note(args" in (tool.description or "")
        assert "a write). (always refused" in (tool.description or "")
        res = plain.call("await tools.add_note({text: 'unasked'})")
        assert res.is_error is True
        assert res.structured_content["error"]["kind"] == "binding_denied"  # type: ignore[index]
        # reads work as for anyone
        ok = plain.call("(await tools.lookup({city: 'Oslo'})).city")
        assert ok.structured_content["value"] == "Oslo"  # type: ignore[index]
    finally:
        plain.close()
    assert notes(mcp) == before


# -- hostile scripts: each ends as an error result, and the next request is answered


HOSTILE = {
    "while (true) {}": "timeout",
    "const a = []; while (true) a.push('x'.repeat(1e5));": "memory",
    "const f = () => f(); f()": "stack",
    "'x'.repeat(2 * 1024 * 1024)": "output_limit",
    "for (;;) console.log('y'.repeat(1e4))": "output_limit",
    "throw null": "runtime",
    "const o = {}; o.self = o; o": "runtime",
    "({then(r) { r(1) }}).then": "runtime",
    "let x: number = 1": "syntax",
}


@pytest.mark.parametrize("code", list(HOSTILE))
def test_a_hostile_script_is_an_error_and_the_server_answers_the_next(
    mcp: Client, code: str
) -> None:
    res = mcp.call(code)
    assert res.is_error is True
    assert res.structured_content is not None
    assert res.structured_content["error"]["kind"] == HOSTILE[code]
    assert mcp.call("6 * 7").structured_content["value"] == 42  # type: ignore[index]


def test_values_beyond_json_reach_the_client_as_valid_json(mcp: Client) -> None:
    res = mcp.call("({nan: NaN, inf: -Infinity, lone: '\\ud800', big: 2n ** 70n, s: 'é\\u0000'})")
    assert res.is_error is False, text(res)
    value = res.structured_content["value"]  # type: ignore[index]
    assert value == {"nan": None, "inf": None, "lone": "\ufffd", "big": 2**70, "s": "é\x00"}
    deep = mcp.call("let v = 0; for (let i = 0; i < 900; i++) v = [v]; v")
    assert deep.is_error is False
    data = deep.structured_content
    assert data is not None and data["value"] is None
    assert json.loads(data["value_json"]) == json.loads("[" * 900 + "0" + "]" * 900)
    assert mcp.call("1").structured_content["value"] == 1  # type: ignore[index]


def test_runs_are_audited(mcp: Client, workspace: Path) -> None:
    mcp.call("21 * 2")
    records = [json.loads(line) for line in (workspace / "audit.jsonl").read_text().splitlines()]
    assert any(r["event"] == "run" and r["outcome"] == "ok" for r in records)
    assert any(r["event"] == "call" and r["binding"] == "lookup" for r in records)


def test_each_call_starts_fresh_without_sessions(mcp: Client) -> None:
    assert mcp.call("globalThis.kept = 1; kept").is_error is False
    res = mcp.call("typeof kept")
    assert res.structured_content["value"] == "undefined"  # type: ignore[index]


def _sdk_client_session(
    config: Path, elicit: Any
) -> tuple[str, types.CallToolResult, types.CallToolResult, list[str], str | None]:
    """The SDK's own `Client` (it negotiates the 2026-07-28 protocol, where approvals
    travel as InputRequiredResult rounds): the description, a read, a write and the
    notes after it."""
    asked: list[str] = []

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        result: types.ElicitResult = await elicit(params)
        return result

    async def session() -> tuple[
        str, types.CallToolResult, types.CallToolResult, list[str], str | None
    ]:
        command = clambot_mcp("--config", str(config))
        params = StdioServerParameters(command=command[0], args=command[1:])
        async with SdkClient(params, elicitation_callback=callback if elicit else None) as c:
            (tool,) = (await c.list_tools()).tools
            ok = await c.call_tool(TOOL, {"code": "(await tools.lookup({city: 'Rome'})).city"})
            write = await c.call_tool(
                TOOL, {"code": "await tools.add_note({text: '2026'}); (await tools.notes()).result"}
            )
            return tool.description or "", ok, write, asked, c.protocol_version

    return anyio.run(session)


def test_a_2026_client_approves_through_input_required_rounds(config: Path) -> None:
    desc, ok, write, asked, version = _sdk_client_session(config, accept())
    assert version == "2026-07-28"
    assert ok.structured_content["value"] == "Rome"  # type: ignore[index]
    assert "a write). (needs approval" in desc
    assert write.is_error is False, text(write)
    assert write.structured_content["value"] == ["2026"]  # type: ignore[index]
    (question,) = asked
    assert "tools.add_note" in question and '"text": "2026"' in question


def test_a_2026_client_that_declines_or_cannot_elicit_gets_no_write(config: Path) -> None:
    desc, _, write, asked, _ = _sdk_client_session(config, refuse())
    assert write.is_error is True and len(asked) == 1
    assert write.structured_content["error"]["kind"] == "binding_denied"  # type: ignore[index]
    desc, _, write, asked, _ = _sdk_client_session(config, None)
    assert "a write). (always refused" in desc
    assert write.is_error is True and asked == []


def test_an_approval_that_comes_after_the_run_never_runs_the_write(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = write_config(
        tmp_path,
        '[limits]\ntimeout_s = 1\n[files]\nroot = "data"\nwrite = true\n'
        '[audit]\npath = "audit.jsonl"\n',
    )
    released = asyncio.Event()

    async def answer_when_released(params: types.ElicitRequestParams) -> types.ElicitResult:
        await released.wait()
        return types.ElicitResult(action="accept", content={"allow": True})

    c = Client(stdio("--config", str(config)))
    try:
        c.answer = answer_when_released
        res = c.call(
            "await Promise.all([tools.fs_write_text({path: 'late.txt', text: 'x'}),"
            " tools.add_note({text: 'late'})])"
        )
        assert res.structured_content["error"]["kind"] == "timeout"  # type: ignore[index]
        assert len(c.asked) == 2
        c.soon(released.set)  # both answers now: after the run has ended

        def calls() -> dict[str, str]:
            audit = tmp_path / "audit.jsonl"
            lines = audit.read_text().splitlines() if audit.exists() else []
            records = [json.loads(line) for line in lines]
            return {r["binding"]: r["outcome"] for r in records if r["event"] == "call"}

        assert wait_until(lambda: calls().get("fs_write_text") == "expired"), calls()
        assert calls()["add_note"] == "abandoned"  # an async call: cancelled with its run
        assert not (tmp_path / "data" / "late.txt").exists()
        assert "late" not in notes(c)
    finally:
        c.close()


def test_sigterm_ends_the_server_and_the_servers_it_fronts(config: Path) -> None:
    """A service manager's stop while the client still holds stdin open."""
    process = subprocess.Popen(
        clambot_mcp("--config", str(config)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(hello) + "\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["id"] == 1  # serving, stdin held open
        tasks = Path(f"/proc/{process.pid}/task").iterdir()
        fronted = [int(p) for t in tasks for p in (t / "children").read_text().split()]
        assert fronted  # tests/mcp_server.py, started for [mcp.notes]
        process.terminate()
        assert process.wait(PATIENCE_S) == 0
        assert wait_until(lambda: not any(alive(pid) for pid in fronted))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(PATIENCE_S)
        for stream in (process.stdin, process.stdout, process.stderr):
            assert stream is not None
            stream.close()
