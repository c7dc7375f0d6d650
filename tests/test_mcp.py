"""clambot_tools.mcp: a real MCP server's tools (tests/mcp_server.py, the SDK's
FastMCP) granted to real sandboxes, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_helpers import (
    SERVER,
    HttpServer,
    alive,
    children,
    mcp_threads,
    stdio_args,
    wait_until,
)

from clambot_tools import (
    Approval,
    ApprovalRequest,
    ConfigError,
    Limits,
    Policy,
    Sandbox,
)
from clambot_tools.mcp import (
    EnvSecret,
    MCPConnection,
    MCPConnectionError,
    MCPServerConfig,
    MCPToolError,
    load_mcp_config,
    mcp_bindings,
)

WRITES_OK = Policy(auto_approve=("write",))


@pytest.fixture(scope="module")
def conn() -> Iterator[MCPConnection]:
    """One stdio connection to the test server for the module's tests."""
    with MCPConnection(**stdio_args(), name="test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.stop()


def sandbox(c: MCPConnection, policy: Policy = WRITES_OK, timeout_s: float = 10) -> Sandbox:
    return Sandbox(bindings=c.bindings(), policy=policy, limits=Limits(timeout_s=timeout_s))


def server_events(c: MCPConnection) -> list[str]:
    value = c.call("events")
    assert isinstance(value, dict)
    events: list[str] = value["result"]
    return events


# -- the tools as bindings


def test_tools_keep_the_servers_names_descriptions_and_schemas(conn: MCPConnection) -> None:
    names = [b.name for b in conn.bindings()]
    assert names[:4] == ["lookup", "echo", "search_web", "add_note"]
    decl = sandbox(conn).describe_tools()
    # inputSchema -> arguments (with the default), outputSchema -> the result type
    assert "/** Current weather of a city. */" in decl
    assert (
        "  lookup(args: {\n    city: string;\n    days?: number; // default: 1\n"
        "  }): Promise<{ city: string; temp_c: number; tags: string[] }>;"
    ) in decl
    # no outputSchema: the result is the text content
    assert "  echo(args: { text: string }): Promise<string>;" in decl
    # a write (no hints) is declared as needing approval when an approver is set
    asked = Sandbox(bindings=conn.bindings(), policy=Policy(approve=lambda r: True))
    assert "/** Add a note (no annotations: a write). (needs approval) */" in (
        asked.describe_tools()
    )


def test_structured_content_is_the_value_and_text_otherwise(conn: MCPConnection) -> None:
    res = sandbox(conn).run(
        "const w = await tools.lookup({city: 'Paris', days: 2});"
        "const e = await tools['echo']({text: 'héllo'});"
        "({w, e, t: typeof e})"
    )
    assert res.ok, res.error
    assert res.value == {
        "w": {"city": "Paris", "temp_c": 23.5, "tags": ["sunny"]},
        "e": "héllo",
        "t": "string",
    }


def test_is_error_rejects_the_call_with_the_servers_message(conn: MCPConnection) -> None:
    sb = sandbox(conn)
    caught = sb.run("try { await tools.fail({message: 'no such city'}) } catch (e) { e.message }")
    assert caught.ok and "no such city" in caught.value
    uncaught = sb.run("await tools.fail({message: 'no such city'})")
    assert uncaught.error is not None and uncaught.error.kind == "binding_failed"
    assert "no such city" in uncaught.error.message
    with pytest.raises(MCPToolError, match="no such city"):
        conn.call("fail", {"message": "no such city"})


def test_arguments_are_checked_against_the_input_schema(conn: MCPConnection) -> None:
    res = sandbox(conn).run(
        "try { await tools.lookup({city: 7, extra: 1}) } catch (e) { [e.name, e.message] }"
    )
    assert res.ok
    name, message = res.value
    assert name == "TypeError"
    assert "city" in message and "extra" in message


def test_effects_come_from_the_annotations(conn: MCPConnection) -> None:
    effects = {b.name: b.effects for b in conn.bindings()}
    assert effects["lookup"] == ("read",)  # readOnlyHint
    assert effects["search_web"] == ("read", "network")  # + openWorldHint
    assert effects["add_note"] == ("write",)  # no hints
    assert effects["delete_notes"] == ("write",)  # destructiveHint
    overridden = conn.bindings(tools=["add_note"], effects={"add_note": ["read"]})
    assert [(b.name, b.effects) for b in overridden] == [("add_note", ("read",))]
    with pytest.raises(ConfigError, match="no tool"):
        conn.bindings(tools=["nope"])


def test_writes_need_approval_as_any_binding(conn: MCPConnection) -> None:
    code = "await tools.add_note({text: 'from a script'})"
    # no approver: refused before it reaches the server
    refused = sandbox(conn, Policy()).run(code)
    assert refused.error is not None and refused.error.kind == "binding_denied"
    assert "approver" in refused.error.message
    assert "from a script" not in str(conn.call("notes"))

    asked: list[ApprovalRequest] = []

    def approve(req: ApprovalRequest) -> Approval:
        asked.append(req)
        return Approval.ALLOW_ONCE

    done = sandbox(conn, Policy(approve=approve)).run(code)
    assert done.ok, done.error
    assert [(r.binding, dict(r.args)) for r in asked] == [("add_note", {"text": "from a script"})]
    assert "from a script" in conn.call("notes")["result"]

    no_network = sandbox(conn, Policy(deny_effects=["network"])).run(
        "await tools.search_web({query: 'x'})"
    )
    assert no_network.error is not None and no_network.error.kind == "binding_denied"


def test_call_caps_and_the_audit_log_apply(conn: MCPConnection) -> None:
    records: list[dict[str, Any]] = []
    sb = Sandbox(
        bindings=conn.bindings(),
        policy=Policy(max_calls=2),
        audit=records.append,
    )
    res = sb.run(
        "await tools.echo({text: 'a'}); await tools.echo({text: 'b'});"
        "try { await tools.echo({text: 'c'}) } catch (e) { e.message }"
    )
    assert res.ok and "at most 2 tool calls" in res.value
    calls = [(r["binding"], r["decision"], r["outcome"]) for r in records if r["event"] == "call"]
    assert calls == [
        ("echo", "allowed", "ok"),
        ("echo", "allowed", "ok"),
        ("echo", "denied", "denied"),
    ]


# -- time, cancellation, event loops


def test_a_run_that_times_out_cancels_its_call_on_the_server(conn: MCPConnection) -> None:
    res = sandbox(conn, timeout_s=1).run("await tools.slow({seconds: 60, tag: 'stdio-timeout'})")
    assert res.error is not None and res.error.kind == "timeout"
    # the server was told: its handler was cancelled, not left sleeping
    assert wait_until(lambda: "cancelled stdio-timeout" in server_events(conn))
    assert "finished stdio-timeout" not in server_events(conn)
    assert wait_until(lambda: conn.in_flight == 0)


def test_concurrent_calls_run_concurrently_on_one_session(conn: MCPConnection) -> None:
    res = sandbox(conn).run(
        "await Promise.all(['p1', 'p2', 'p3'].map(tag => tools.slow({seconds: 0.3, tag})))"
    )
    assert res.ok, res.error
    assert [v["result"] for v in res.value] == ["p1", "p2", "p3"]
    events = [e for e in server_events(conn) if e.endswith(("p1", "p2", "p3"))]
    first_finish = min(i for i, e in enumerate(events) if e.startswith("finished"))
    assert sum(e.startswith("started") for e in events[:first_finish]) == 3


def test_run_and_arun_share_the_session_from_any_loop_or_thread(conn: MCPConnection) -> None:
    sb = sandbox(conn)
    pid = conn.server_pid
    code = "(await tools.pid({})).result"

    async def on_a_loop() -> list[Any]:
        # arun on this loop, and a blocking run called from inside the same loop:
        # the session is on neither, so neither can starve the other
        first = await sb.arun(code)
        second = sb.run(code)
        both = await asyncio.gather(sb.arun(code), sb.arun(code))
        return [first.value, second.value, *(r.value for r in both)]

    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.extend(asyncio.run(on_a_loop())))
    thread.start()
    main_loop = asyncio.run(on_a_loop())
    thread.join(60)
    assert main_loop == [pid] * 4
    assert seen == [pid] * 4


def test_cancelling_arun_cancels_the_call_on_the_server(conn: MCPConnection) -> None:
    sb = sandbox(conn)

    async def main() -> None:
        task = asyncio.create_task(sb.arun("await tools.slow({seconds: 60, tag: 'arun-cancel'})"))
        assert await asyncio.to_thread(
            wait_until, lambda: "started arun-cancel" in server_events(conn)
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_until(lambda: "cancelled arun-cancel" in server_events(conn))


# -- streamable HTTP


def test_streamable_http_with_headers_and_a_secret_from_the_environment(
    http_server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_TEST_MCP_TOKEN", "s3cret-value")
    secret = EnvSecret(env="CLAMBOT_TEST_MCP_TOKEN", prefix="Bearer ")
    with MCPConnection(
        url=http_server.url, headers={"Authorization": secret, "X-Team": "blue"}
    ) as c:
        assert "s3cret" not in repr(c) + repr(c.config)
        res = sandbox(c).run(
            "const a = await tools.header({name: 'authorization'});"
            "const t = await tools.header({name: 'x-team'});"
            "const w = await tools.lookup({city: 'Oslo'});"
            "({a, t, w: w.city})"
        )
        assert res.ok, res.error
        assert res.value == {"a": "Bearer s3cret-value", "t": "blue", "w": "Oslo"}


def test_http_run_that_times_out_cancels_the_call_on_the_server(http_server: HttpServer) -> None:
    with MCPConnection(url=http_server.url) as c:
        res = sandbox(c, timeout_s=1).run("await tools.slow({seconds: 60, tag: 'http-timeout'})")
        assert res.error is not None and res.error.kind == "timeout"
        assert wait_until(lambda: "cancelled http-timeout" in server_events(c))
        assert wait_until(lambda: c.in_flight == 0)


def test_http_json_responses_work_too() -> None:
    server = HttpServer("--json")
    try:
        with MCPConnection(url=server.url) as c:
            res = sandbox(c).run("(await tools.lookup({city: 'Lima'})).city")
            assert res.ok and res.value == "Lima"
    finally:
        server.stop()


# -- lifetime


def test_the_session_lives_as_long_as_the_sandbox() -> None:
    c = MCPConnection(**stdio_args())  # type: ignore[arg-type]
    sb = Sandbox(bindings=c.bindings())
    pid = c.server_pid
    assert pid is not None and alive(pid)
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is not None  # the Sandbox's bindings hold it
    assert sb.run("await tools.echo({text: 'still here'})").value == "still here"
    del sb
    gc.collect()
    assert ref() is None
    assert wait_until(lambda: not alive(pid)), "the server outlived its last Sandbox"
    assert wait_until(lambda: pid not in children()), "the server was not reaped"


def test_with_block_closes_the_session_the_server_and_its_thread() -> None:
    before = set(mcp_threads())
    with MCPConnection(**stdio_args(), name="block") as c:  # type: ignore[arg-type]
        pid = c.server_pid
        assert pid is not None and alive(pid)
        assert c.call("echo", {"text": "x"}) == "x"
    assert c.closed
    assert not alive(pid) and pid not in children()
    # no thread of its own is left (one of an earlier test may have ended meanwhile)
    assert set(mcp_threads()) <= before
    with pytest.raises(MCPConnectionError, match="closed"):
        c.call("echo", {"text": "x"})
    res = Sandbox(bindings=[]).run("1")  # unrelated sandboxes are fine
    assert res.ok


def test_async_with_block_and_arun() -> None:
    async def main() -> tuple[Any, int | None]:
        async with MCPConnection(**stdio_args()) as c:  # type: ignore[arg-type]
            res = await Sandbox(bindings=c.bindings()).arun("await tools.echo({text: 'aw'})")
            return res.value, c.server_pid

    value, pid = asyncio.run(main())
    assert value == "aw"
    assert pid is not None and not alive(pid)


def test_a_read_call_that_lost_its_server_is_retried_on_a_new_connection(
    conn: MCPConnection, tmp_path: Path
) -> None:
    first = conn.server_pid
    marker = str(tmp_path / "died")
    res = sandbox(conn, timeout_s=20).run(f"await tools.die_once({{marker: {marker!r}}})")
    assert res.ok, res.error
    assert res.value == "survived"
    assert conn.server_pid not in (None, first)
    assert first is not None and wait_until(lambda: first not in children())


def test_a_write_call_that_lost_its_server_fails_and_is_not_repeated(
    conn: MCPConnection, tmp_path: Path
) -> None:
    marker = str(tmp_path / "died")
    # the same tool, granted as a write: it may have acted, so no retry
    b = conn.bindings(tools=["die_once"], effects={"die_once": ["write"]})
    sb = Sandbox(bindings=b, policy=WRITES_OK, limits=Limits(timeout_s=20))
    res = sb.run(f"await tools.die_once({{marker: {marker!r}}})")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert "broke during the call" in res.error.message
    again = sb.run(f"await tools.die_once({{marker: {marker!r}}})")
    assert again.ok and again.value == "survived"  # the next call reconnects


# -- configuration


def test_load_mcp_config_reads_mcp_tables(tmp_path: Path) -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    text = """
[mcp.local]
command = "python"
args = ["server.py", "--quiet"]
cwd = "servers"
env = { LOG_LEVEL = "error", API_KEY = { env = "LOCAL_KEY" } }

[mcp.remote]
type = "http"
url = "https://mcp.example.com/mcp"
tools = ["search"]
effects = { search = ["read", "network"] }
[mcp.remote.headers]
Authorization = { env = "REMOTE_TOKEN", prefix = "Bearer " }
"""
    servers = load_mcp_config(tomllib.loads(text)["mcp"], base_dir=tmp_path)
    local, remote = servers["local"], servers["remote"]
    assert local.command == "python" and local.args == ["server.py", "--quiet"]
    assert local.cwd == str(tmp_path / "servers")
    assert local.env["API_KEY"] == EnvSecret(env="LOCAL_KEY")
    assert remote.url == "https://mcp.example.com/mcp" and remote.tools == ["search"]
    assert remote.headers["Authorization"] == EnvSecret(env="REMOTE_TOKEN", prefix="Bearer ")
    assert remote.effects == {"search": ["read", "network"]}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"a": {}}, "mcp.a: give either command (stdio) or url"),
        ({"a": {"command": "x", "url": "http://h/mcp"}}, "give either command"),
        ({"a": {"url": "ftp://h/mcp"}}, "must be an http(s) URL"),
        ({"a": {"url": "http://h/mcp", "args": ["x"]}}, "args, env and cwd are for a command"),
        ({"a": {"command": "x", "headers": {"A": "b"}}}, "headers are for a url"),
        ({"a": {"command": "x", "typo": 1}}, "mcp.a.typo: Extra inputs"),
        ({"a": {"command": "x", "effects": {"t": ["delete"]}}}, "mcp.a.effects.t.0"),
        ({"a": {"url": "http://h/mcp", "headers": {"A": {"env": ""}}}}, "mcp.a.headers.A"),
        ({"a": {"type": "stdio", "url": "http://h/mcp"}}, "type 'stdio' does not match"),
        ({"a": {"type": "sse", "url": "http://h/mcp"}}, "mcp.a.type: Input should be"),
    ],
)
def test_load_mcp_config_names_each_problem(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_mcp_config(table)


def test_a_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAMBOT_NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="CLAMBOT_NO_SUCH_VAR"):
        MCPConnection(
            url="http://127.0.0.1:9/mcp", headers={"A": EnvSecret(env="CLAMBOT_NO_SUCH_VAR")}
        )


def test_mcp_bindings_connects_configs_by_name() -> None:
    cfg = MCPServerConfig(command=sys.executable, args=[SERVER], tools=["echo"], prefix="t_")
    bindings = mcp_bindings({"tests": cfg}, limits=Limits(max_result_bytes=1 << 16))
    assert [b.name for b in bindings] == ["t_echo"]
    res = Sandbox(bindings=bindings).run("await tools.t_echo({text: 'named'})")
    assert res.ok and res.value == "named"
    # one server's config on its own is one server, not a mapping of names
    alone = mcp_bindings({"command": sys.executable, "args": [SERVER], "tools": ["pid"]})
    assert [b.name for b in alone] == ["pid"]


def test_a_command_that_does_not_exist_is_a_clear_error() -> None:
    c = MCPConnection(command="/nonexistent/clambot-mcp-server", name="ghost")
    with pytest.raises(MCPConnectionError, match=r"ghost.*no such command"):
        c.bindings()
    c.close()


def test_the_readme_mcp_example_runs_and_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import io
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## MCP\n") : readme.index("\n## Command line\n")]
    server, client = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "weather_server.py").write_text(server, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(client, "README.md", "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    assert "forecast(args: { city: string }): Promise<{ city: string; temp_c: number }>;" in printed
    assert "approve save_note({'text': 'Paris 21.5, Oslo 12'})? yes\n['Paris']\n" in printed
