"""`clambot mcp --http`: a real server process over streamable HTTP, driven by the MCP
SDK's ClientSession: where it listens, the bearer token, sessions, approvals."""

from __future__ import annotations

import io
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import PATIENCE_S, wait_until
from mcp_serving import TOOL, Client, HttpServer, accept, http, text, write_config

from clambot_tools.cli import main

TOKEN = secrets.token_urlsafe(24)
ENV = {"CLAMBOT_TEST_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """`clambot mcp --http 0 --sessions --token-env ...`, fronting tests/mcp_server.py."""
    workspace = tmp_path_factory.mktemp("mcp-http")
    config = write_config(workspace, "[limits]\ntimeout_s = 3\n")
    s = HttpServer(
        "--config", str(config), "--http", "0", "--sessions",
        "--token-env", "CLAMBOT_TEST_TOKEN", env=ENV,
    )  # fmt: skip
    yield s
    s.stop()


def post(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of an MCP initialize request POSTed to `url`."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"},
        },
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE_S) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def value(c: Client, code: str) -> object:
    res = c.call(code)
    assert res.is_error is False, text(res)
    assert res.structured_content is not None
    return res.structured_content["value"]


# -- where it listens, and who may talk to it


def test_it_listens_on_loopback_by_default(server: HttpServer) -> None:
    assert urlsplit(server.url).hostname == "127.0.0.1"
    assert "bearer token required" in server.banner


def test_a_request_without_the_token_is_refused(server: HttpServer) -> None:
    assert post(server.url, {}) == 401
    assert post(server.url, {"Authorization": f"Bearer {TOKEN[:-1]}x"}) == 401
    assert post(server.url, {"Authorization": f"Basic {TOKEN}"}) == 401
    assert post(server.url, {"Authorization": f"Bearer {TOKEN}"}) == 200


def test_a_client_without_the_token_cannot_connect(server: HttpServer) -> None:
    with pytest.raises(RuntimeError, match="did not connect"):
        Client(http(server.url, token="wrong-" + TOKEN))


def test_with_the_token_a_script_calls_the_fronted_servers_tools(server: HttpServer) -> None:
    c = Client(http(server.url, TOKEN))
    try:
        (tool,) = c.tools()
        assert "lookup(args: {" in (tool.description or "")
        assert value(c, "(await tools.lookup({city: 'Lima'})).temp_c") == 22.5
        failed = c.call("null.x")
        assert failed.is_error is True and "line 1" in text(failed)
    finally:
        c.close()


def _refused(*args: str, env: dict[str, str] | None = None) -> str:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        status = main(["mcp", *args], stdout=io.StringIO(), stderr=err)
    assert status == 2, err.getvalue()
    return err.getvalue()


def test_beyond_loopback_needs_explicit_flags_and_a_token() -> None:
    assert "--allow-remote" in _refused("--http", "0.0.0.0:0")
    assert "--allow-remote" in _refused("--http", "example.com:8765")
    assert "without a bearer token" in _refused("--http", "0.0.0.0:0", "--allow-remote")
    short = _refused(
        "--http", "0.0.0.0:0", "--allow-remote", "--token-env", "T", env={"T": "short"}
    )
    assert "at least 16" in short
    assert "is not set" in _refused("--http", "0", "--token-env", "CLAMBOT_NO_SUCH_VARIABLE")
    assert "are for --http" in _refused("--token-env", "CLAMBOT_TEST_TOKEN", env=ENV)
    assert "HOST:PORT" in _refused("--http", "localhost:http")


def test_beyond_loopback_with_a_token_it_serves_and_checks_it(tmp_path: Path) -> None:
    s = HttpServer(
        "--http", "0.0.0.0:0", "--allow-remote", "--token-env", "CLAMBOT_TEST_TOKEN", env=ENV
    )
    try:
        assert urlsplit(s.url).hostname == "0.0.0.0"
        local = s.url.replace("0.0.0.0", "127.0.0.1")
        assert post(local, {}) == 401
        assert post(local, {"Authorization": f"Bearer {TOKEN}"}) == 200
    finally:
        s.stop()


def test_insecure_no_token_is_an_explicit_choice() -> None:
    s = HttpServer("--http", "0.0.0.0:0", "--allow-remote", "--insecure-no-token")
    try:
        assert "no token" in s.banner
        assert post(s.url.replace("0.0.0.0", "127.0.0.1"), {}) == 200
    finally:
        s.stop()


# -- sessions


def test_a_session_keeps_its_globals_and_sessions_are_apart(server: HttpServer) -> None:
    a, b = Client(http(server.url, TOKEN)), Client(http(server.url, TOKEN))
    try:
        (tool,) = a.tools()
        assert "kept from one call of this tool to the next" in (tool.description or "")
        assert value(a, "let cart = ['apple']; cart.length") == 1
        assert value(a, "cart.push('pear'); cart") == ["apple", "pear"]
        assert value(b, "typeof cart") == "undefined"
        # a run stopped by a limit leaves the session as it was
        timed_out = a.call("cart.push('lost'); while (true) {}")
        assert timed_out.structured_content["error"]["kind"] == "timeout"  # type: ignore[index]
        assert value(a, "cart") == ["apple", "pear"]
    finally:
        a.close()
        b.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("VmRSS")


def test_a_sessions_memory_is_freed_when_the_mcp_session_ends(server: HttpServer) -> None:
    """Each session holds ~24 MB of JavaScript data; twelve sessions opened and closed
    one after the other leave the server about as large as one did."""
    fill = "globalThis.big = Array.from({length: 300000}, (_, i) => 'item' + i); big.length"

    def one_session() -> None:
        c = Client(http(server.url, TOKEN))
        try:
            assert value(c, fill) == 300_000
        finally:
            c.close()  # the SDK's client ends its session (DELETE)

    one_session()
    base = _rss(server.process.pid)
    for _ in range(12):
        one_session()
    grown = _rss(server.process.pid) - base
    assert grown < 100 << 20, f"the server grew by {grown >> 20} MiB"


def test_a_cancelled_call_stops_its_script_and_the_session_goes_on(server: HttpServer) -> None:
    c = Client(http(server.url, TOKEN))
    try:
        assert value(c, "let n = 1; n") == 1
        session = c.session
        assert session is not None

        async def cancel_after_start() -> None:
            with anyio.move_on_after(0.5):
                await session.call_tool("run_js_sandboxed", {"code": "n = 2; while (true) {}"})

        c.run(cancel_after_start())
        # the next call waits for the cancelled run to stop, then sees its session
        assert value(c, "n") in (1, 2)
        assert value(c, "n + 40") in (41, 42)
    finally:
        c.close()


def test_an_approval_over_http_runs_the_write(server: HttpServer) -> None:
    c = Client(http(server.url, TOKEN))
    try:
        c.answer = accept()
        assert str(value(c, "await tools.add_note({text: 'over http'})")).endswith("notes")
        assert "tools.add_note" in c.asked[0]
        assert "over http" in value(c, "(await tools.notes()).result")  # type: ignore[operator]
    finally:
        c.close()


def test_the_server_stops_cleanly(tmp_path: Path) -> None:
    s = HttpServer("--http", "0")
    s.process.terminate()
    assert wait_until(lambda: s.process.poll() is not None)
    assert s.process.returncode == 0
    s.stop()


def test_a_2026_client_over_http_runs_fresh_and_approves_in_rounds(server: HttpServer) -> None:
    """The SDK's own Client speaks 2026-07-28 over HTTP: stateless requests (so no
    session keeps globals, even with --sessions), approvals as InputRequiredResult
    rounds on separate HTTP requests."""
    from mcp import Client as SdkClient
    from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult

    async def approve(context: object, params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"allow": True})

    async def session() -> tuple[str, CallToolResult, CallToolResult, CallToolResult, str | None]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(headers=headers, timeout=PATIENCE_S) as http_client:
            transport = streamable_http_client(server.url, http_client=http_client)
            async with SdkClient(transport, elicitation_callback=approve) as c:
                (tool,) = (await c.list_tools()).tools
                first = await c.call_tool(TOOL, {"code": "globalThis.kept = 1; kept"})
                second = await c.call_tool(TOOL, {"code": "typeof kept"})
                write = await c.call_tool(
                    TOOL, {"code": "await tools.add_note({text: 'rounds over http'})"}
                )
                return tool.description or "", first, second, write, c.protocol_version

    desc, first, second, write, version = anyio.run(session)
    assert version == "2026-07-28"
    assert "Each run starts fresh" in desc and "(needs approval)" in desc
    assert first.structured_content["value"] == 1
    assert second.structured_content["value"] == "undefined"
    assert write.is_error is False, write
