"""`clambot mcp`: what one ``run_js_sandboxed`` call costs, beside `clambot run`.

    .venv/bin/python bench/mcp_server.py [--calls N] [--spawns N] [--rounds N]

Per call, wall-clock time as the client sees it, for two scripts: ``1 + 1``, and one
that calls a tool of a fronted MCP server (tests/mcp_server.py's ``lookup``, through
``[mcp.notes]``):

- `clambot run - --config sandbox.toml`, one process per script (what a client that
  shells out pays: the interpreter, the imports, the config, and for the second script
  starting the fronted server and its handshake);
- `clambot mcp --config sandbox.toml` over stdio, one long-lived session (the SDK's
  ``ClientSession``, 2025-11-25 handshake), ``tools/call`` after a warm-up;
- the same over streamable HTTP on 127.0.0.1;
- in-process ``Sandbox.run`` with the same bindings, for scale.

Each figure is the best of interleaved rounds (the machine is shared). Prints a
Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/mcp.py sits beside this file: its directory must not shadow the `mcp` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from clambot_tools import Sandbox  # noqa: E402 - after the path
from clambot_tools.cli._config import build, load_config  # noqa: E402

SERVER = str(ROOT / "tests" / "mcp_server.py")
SCRIPTS = {
    "`1 + 1`": "1 + 1",
    "one fronted MCP tool call": "(await tools.lookup({city: 'Paris'})).temp_c",
}
Figure = tuple[float, float]  # (median, p90) in milliseconds per call


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summary(times: list[float]) -> Figure:
    times = sorted(times)
    return statistics.median(times), times[int(len(times) * 0.9)]


def clambot(*args: str) -> list[str]:
    return [sys.executable, "-m", "clambot_tools.cli", *args]


def by_process(config: Path, code: str, n: int) -> Figure:
    """`clambot run -` once per script."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        done = subprocess.run(
            clambot("run", "-", "--config", str(config), "--json"),
            input=code,
            capture_output=True,
            text=True,
            check=False,
        )
        times.append((time.perf_counter() - t0) * 1e3)
        if done.returncode != 0:
            raise RuntimeError(f"clambot run failed: {done.stdout}{done.stderr}")
    return summary(times)


async def per_session_call(
    connect: Callable[[], Any], code: str, n: int, warmup: int = 20
) -> Figure:
    """`tools/call` of run_js_sandboxed n times on one ClientSession."""
    from mcp import ClientSession

    async with connect() as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for _ in range(warmup):
            await _call(session, code)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await _call(session, code)
            times.append((time.perf_counter() - t0) * 1e3)
    return summary(times)


async def _call(session: Any, code: str) -> None:
    res = await session.call_tool("run_js_sandboxed", {"code": code})
    if res.is_error:
        raise RuntimeError(res.content[0].text)


def stdio(config: Path) -> Callable[[], Any]:
    from mcp.client.stdio import StdioServerParameters, stdio_client

    command = clambot("mcp", "--config", str(config))
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    return lambda: stdio_client(params)


class HttpServer:
    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            clambot("mcp", "--config", str(config), "--http", "0"),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        self.url = line.split(" at ", 1)[1].split()[0]

    def connect(self) -> Any:
        from mcp.client.streamable_http import streamable_http_client

        return streamable_http_client(self.url)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def in_process(config: Path, code: str, n: int) -> Figure:
    cfg = load_config(config)
    try:
        kwargs = build(cfg)
        kwargs.pop("manifest")
        sb = Sandbox(**kwargs)
        for _ in range(20):
            sb.run(code)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            res = sb.run(code)
            times.append((time.perf_counter() - t0) * 1e3)
            assert res.ok, res.error
        return summary(times)
    finally:
        cfg.close()


def measure(
    config: Path, bare: Path, calls: int, spawns: int, rounds: int
) -> dict[tuple[str, str], Figure]:
    best: dict[tuple[str, str], Figure] = {}

    def keep(how: str, script: str, fig: Figure) -> None:
        key = (how, script)
        if key not in best or fig[0] < best[key][0]:
            best[key] = fig

    http = HttpServer(config)
    try:
        for r in range(rounds):
            log(f"round {r + 1} of {rounds}")
            keep(
                "`clambot run`, a config without `[mcp]`",
                "`1 + 1`",
                by_process(bare, "1 + 1", spawns),
            )
            for label, code in SCRIPTS.items():
                keep("`clambot run`, a process per script", label, by_process(config, code, spawns))
                keep(
                    "`clambot mcp`, stdio",
                    label,
                    asyncio.run(per_session_call(stdio(config), code, calls)),
                )
                keep(
                    "`clambot mcp --http`, 127.0.0.1",
                    label,
                    asyncio.run(per_session_call(http.connect, code, calls)),
                )
                keep("in-process `Sandbox.run`, for scale", label, in_process(config, code, calls))
    finally:
        http.stop()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per session")
    parser.add_argument("--spawns", type=int, default=10, help="clambot run processes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sandbox.toml"
        config.write_text(
            f'[limits]\ntimeout_s = 30\n[mcp.notes]\ncommand = "{sys.executable}"\n'
            f'args = ["{SERVER}"]\ntools = ["lookup"]\n'
        )
        bare = Path(tmp) / "bare.toml"
        bare.write_text("[limits]\ntimeout_s = 30\n")
        load = os.getloadavg()[0]
        best = measure(config, bare, args.calls, args.spawns, args.rounds)
        after = os.getloadavg()[0]
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# {stamp} | {cpu}, {os.cpu_count()} cores | Python {platform.python_version()} | "
        f"mcp {version('mcp')}, clambot-tools {version('clambot-tools')}\n"
    )
    print("| per call (ms; best of the rounds) | script | median | p90 |")
    print("|---|---|---|---|")
    for (how, script), (med, p90) in best.items():
        print(f"| {how} | {script} | {med:.2f} | {p90:.2f} |")
    print(f"\nLoad average (1 min) {load:.2f} before, {after:.2f} after.")


if __name__ == "__main__":
    main()
