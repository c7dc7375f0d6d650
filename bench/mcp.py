"""MCP: what calling a server's tool from a script costs, and what the model reads.

    .venv/bin/python bench/mcp.py [--calls N]

1. Per-call time over stdio, against the repository's test server (tests/mcp_server.py,
   the SDK's FastMCP), tool ``echo``:
   - the SDK's own client (``mcp.Client``) calling it directly, on one event loop: the
     floor;
   - ``MCPConnection.call`` (blocking; the hop to the connection's own loop thread);
   - from a script: N calls in one ``Sandbox.run`` (per call), and one call per
     ``Sandbox.run`` / ``Sandbox.arun`` (whole runs), beside an empty run.
2. Tokens (o200k_base, npm ``gpt-tokenizer``) of ``Sandbox.describe_tools()`` for a
   server's tools versus the server's ``tools/list`` result as JSON (what an MCP client
   puts in the model's context), for the test server and two public servers from npm
   (``@modelcontextprotocol/server-filesystem`` and ``server-memory``).

Needs Node.js and npm: the tokenizer (the one bench/tokens.py uses) and the two
servers are installed, pinned, into bench/.node (git-ignored) when missing. Prints a
Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# this file is bench/mcp.py: its directory must not shadow the `mcp` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from clambot_tools import Limits, Sandbox  # noqa: E402 - after the path
from clambot_tools.mcp import MCPConnection  # noqa: E402

SERVER = str(ROOT / "tests" / "mcp_server.py")
NODE_PACKAGES = [
    "gpt-tokenizer@4.0.0",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
]
#: shared with bench/tokens.py (`make bench` installs the tokenizer there; git-ignored)
NODE_DIR = HERE / ".node"
COUNT_TOKENS = """
const {countTokens} = require("gpt-tokenizer/encoding/o200k_base");
let s = ""; process.stdin.on("data", d => s += d).on("end", () =>
  console.log(JSON.stringify(JSON.parse(s).map(t => countTokens(t)))));
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def node_modules() -> Path:
    """The pinned npm packages, installed once into the cache directory."""
    marker = NODE_DIR / ".installed"
    want = "\n".join(NODE_PACKAGES)
    if not marker.exists() or marker.read_text() != want:
        log(f"installing {', '.join(NODE_PACKAGES)} into {NODE_DIR}")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(NODE_DIR),
                *list(NODE_PACKAGES),
            ],
            check=True,
        )
        marker.write_text(want)
    return NODE_DIR / "node_modules"


def count_tokens(texts: list[str]) -> list[int]:
    out = subprocess.run(
        ["node", "-e", COUNT_TOKENS],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_PATH": str(node_modules())},
    )
    counts: list[int] = json.loads(out.stdout)
    return counts


Figure = tuple[float, float]  # (median, p90) in microseconds per call


def per_call_us(fn: Callable[[], object], n: int, per: int = 1) -> Figure:
    """(median, p90) of `fn`'s time in microseconds, divided by `per` calls each."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6 / per)
    return _summary(times)


def _summary(times: list[float]) -> Figure:
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def sdk_direct(n: int) -> Figure:
    """The SDK's client on its own loop, calling `echo` n times (after a warm-up)."""
    from mcp import Client, StdioServerParameters

    async def main() -> Figure:
        params = StdioServerParameters(command=sys.executable, args=[SERVER])
        async with Client(params, cache=None) as client:
            for _ in range(30):
                await client.call_tool("echo", {"text": "hi"})
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await client.call_tool("echo", {"text": "hi"})
                times.append((time.perf_counter() - t0) * 1e6)
        return _summary(times)

    return asyncio.run(main())


SDK = "SDK `Client.call_tool`, direct (the floor)"
IN_SCRIPT = "100 calls in one Sandbox.run, per call"


def measure(n: int, rounds: int) -> dict[str, Figure]:
    """Every figure, measured in `rounds` interleaved rounds (the machine may be busy:
    each figure keeps its best round)."""
    best: dict[str, Figure] = {}

    def keep(label: str, fig: Figure) -> None:
        if label not in best or fig[0] < best[label][0]:
            best[label] = fig

    with MCPConnection(command=sys.executable, args=[SERVER]) as conn:
        sb = Sandbox(bindings=conn.bindings(tools=["echo"]), limits=Limits(timeout_s=30))
        one = "await tools.echo({text: 'hi'})"
        loop100 = "for (let i = 0; i < 100; i++) await tools.echo({text: 'hi'}); 1"
        for _ in range(30):
            conn.call("echo", {"text": "hi"})
            assert sb.run(one).value == "hi"

        async def arun_times() -> Figure:
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await sb.arun(one)
                times.append((time.perf_counter() - t0) * 1e6)
            return _summary(times)

        for r in range(rounds):
            log(f"round {r + 1} of {rounds}")
            keep(SDK, sdk_direct(n))
            keep(
                "MCPConnection.call (blocking, from a thread)",
                per_call_us(lambda: conn.call("echo", {"text": "hi"}), n),
            )
            keep(IN_SCRIPT, per_call_us(lambda: sb.run(loop100), max(5, n // 50), per=100))
            keep("one call per Sandbox.run (whole run)", per_call_us(lambda: sb.run(one), n))
            keep("one call per Sandbox.arun (whole run)", asyncio.run(arun_times()))
            keep("empty Sandbox.run (`1`), for scale", per_call_us(lambda: sb.run("1"), n))
    return best


def tokens_for(name: str, conn: MCPConnection) -> tuple[str, int, int, int]:
    listing = {
        "tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in conn.tools]
    }
    as_json = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    decl = Sandbox(bindings=conn.bindings()).describe_tools()
    n_json, n_decl = count_tokens([as_json, decl])
    return name, len(conn.tools), n_json, n_decl


def token_rows() -> list[tuple[str, int, int, int]]:
    mods = node_modules()
    rows = []
    with MCPConnection(command=sys.executable, args=[SERVER], name="tests") as c:
        rows.append(tokens_for("tests/mcp_server.py (FastMCP)", c))
    with tempfile.TemporaryDirectory() as root:
        fs = mods / ".bin" / "mcp-server-filesystem"
        with MCPConnection(command=str(fs), args=[root], name="filesystem") as c:
            rows.append(tokens_for("@modelcontextprotocol/server-filesystem", c))
        memory = mods / ".bin" / "mcp-server-memory"
        env = {"MEMORY_FILE_PATH": str(Path(root) / "memory.json")}
        with MCPConnection(command=str(memory), env=env, name="memory") as c:
            rows.append(tokens_for("@modelcontextprotocol/server-memory", c))
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {cpu}, {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | mcp {version('mcp')}, "
        f"clambot-tools {version('clambot-tools')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300, help="timed calls per figure and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    opts = ap.parse_args()
    load0 = os.getloadavg()[0]
    print(f"```\n# {machine()}\n```\n")
    figures = measure(opts.calls, opts.rounds)
    print("| echo over stdio (us per call; best of the rounds) | median | p90 |")
    print("|---|---|---|")
    for label, (med, p90) in figures.items():
        print(f"| {label} | {med:.0f} | {p90:.0f} |")
    sdk, ours = figures[SDK][0], figures[IN_SCRIPT][0]
    print(
        f"\nA call from a script costs {ours - sdk:+.0f} us over the SDK's direct call "
        f"({ours / sdk:.2f}x). Load average (1 min) {load0:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after.\n"
    )
    log("counting tokens")
    print("| server | tools | tools/list as JSON (tokens) | declaration (tokens) | ratio |")
    print("|---|---|---|---|---|")
    for name, count, n_json, n_decl in token_rows():
        print(f"| {name} | {count} | {n_json} | {n_decl} | {n_decl / n_json:.2f} |")


if __name__ == "__main__":
    main()
