#!/usr/bin/env python3
"""Many users in one async process: throughput of scripts with tool calls, and what a
run costs the caller (issue 10).

Figures:
  1. scripts with 10 sequential tool calls of 50 ms each (async, sync and `to_thread`
     tools in turn), 1, 8 and 64 at once in one event loop (`arun`), beside running
     the same scripts one after another: wall time, scripts per second, timeouts;
  2. the reproducer of issue 10.1: n scripts whose async tool awaits `to_thread`, on a
     loop whose default executor has the size asyncio gives a 2-core machine (6);
  3. Ctrl-C during a CPU-bound `run()` on the main thread: from the signal to
     KeyboardInterrupt (in a child process, a few times);
  4. what `run` costs before any JavaScript: a fresh `1+1` with no bindings (driven on
     the caller's thread) and with a sync binding granted (driven on a package thread,
     so a blocking binding cannot hold the caller past the deadline), and a tool round
     trip (a fast sync binding, answered inline).

Usage (from the repository root)::

    .venv/bin/python bench/concurrency.py [--baseline DIR]

`--baseline DIR` runs figures 1 and 2 again in a child process with DIR (a checkout
of another version, its guest built) first on the import path, for a side-by-side.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

SLEEP_S = 0.05
CODE = (
    "let n = 0; const kinds = ['a', 's', 't'];\n"
    "for (let i = 0; i < 10; i++) n += await tools[kinds[i % 3]]({i});\nn"
)


def _tools() -> list[Any]:
    from clambot_tools import binding

    async def a(i: int) -> int:
        await asyncio.sleep(SLEEP_S)
        return i

    def s(i: int) -> int:
        time.sleep(SLEEP_S)
        return i

    async def t(i: int) -> int:
        return await asyncio.to_thread(s, i)

    return [binding(a), binding(s), binding(t)]


def throughput() -> dict[str, Any]:
    """Figure 1."""
    from clambot_tools import Limits, Sandbox

    sb = Sandbox(bindings=_tools(), limits=Limits(timeout_s=60))
    out: dict[str, Any] = {}

    async def at_once(n: int) -> tuple[float, int]:
        asyncio.get_running_loop().set_default_executor(cf.ThreadPoolExecutor(64))
        t0 = time.monotonic()
        results = await asyncio.gather(*[sb.arun(CODE) for _ in range(n)])
        return time.monotonic() - t0, sum(not r.ok for r in results)

    async def one_after_another(n: int) -> tuple[float, int]:
        t0 = time.monotonic()
        failed = 0
        for _ in range(n):
            failed += not (await sb.arun(CODE)).ok
        return time.monotonic() - t0, failed

    for n in (1, 8, 64):
        wall, failed = asyncio.run(at_once(n))
        out[f"at_once_{n}"] = {
            "wall_s": round(wall, 3),
            "scripts_per_s": round(n / wall, 1),
            "failed": failed,
        }
    wall, failed = asyncio.run(one_after_another(8))
    out["one_after_another_8"] = {
        "wall_s": round(wall, 3),
        "scripts_per_s": round(8 / wall, 1),
        "failed": failed,
    }
    return out


def to_thread_reproducer() -> dict[str, Any]:
    """Figure 2: issue 10.1's reproducer (timeout 2 s), default executor of 6 threads."""
    from clambot_tools import Limits, Sandbox, binding

    async def work(i: int) -> int:
        return await asyncio.to_thread(lambda: i)

    sb = Sandbox(bindings=[binding(work)], limits=Limits(timeout_s=2))
    out: dict[str, Any] = {}
    for n in (5, 6, 20):

        async def main(n: int = n) -> tuple[float, int]:
            asyncio.get_running_loop().set_default_executor(cf.ThreadPoolExecutor(6))
            t0 = time.monotonic()
            rs = await asyncio.gather(*[sb.arun(f"await tools.work({{i: {i}}})") for i in range(n)])
            return time.monotonic() - t0, sum(not r.ok for r in rs)

        wall, failed = asyncio.run(main())
        out[f"n={n}"] = {"wall_s": round(wall, 3), "timeouts": failed}
    return out


_CTRL_C_CHILD = """
import json, os, signal, threading, time
from clambot_tools import Limits, Sandbox
sb = Sandbox(limits=Limits(timeout_s=60))
sb.run("1 + 1")
out = []
for _ in range(5):
    sent = []
    def interrupt():
        time.sleep(0.3)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        sb.run("for (;;) {}")
    except KeyboardInterrupt:
        out.append((time.perf_counter() - sent[0]) * 1000)
print(json.dumps(out))
"""


def ctrl_c() -> dict[str, Any]:
    """Figure 3."""
    proc = subprocess.run(
        [sys.executable, "-c", _CTRL_C_CHILD], capture_output=True, text=True, timeout=300
    )
    ms = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "signal_to_KeyboardInterrupt_ms": {
            "median": round(statistics.median(ms), 2),
            "max": round(max(ms), 2),
            "n": len(ms),
        }
    }


def run_costs() -> dict[str, Any]:
    """Figure 4."""
    from clambot_tools import Sandbox, binding

    def median_us(fn: Any, n: int) -> float:
        for _ in range(50):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1e6, 1)

    plain = Sandbox()
    with_sync = Sandbox(bindings=[binding(lambda: 1, name="one")])
    loop_code = "let s = 0; for (let i = 0; i < 200; i++) s += await tools.one(); s"
    per_call = (
        median_us(lambda: with_sync.run(loop_code), 100)
        - median_us(lambda: with_sync.run("0"), 300)
    ) / 200
    return {
        "fresh_1+1_no_bindings_us": median_us(lambda: plain.run("1+1"), 1000),
        "fresh_1+1_with_a_sync_binding_us": median_us(lambda: with_sync.run("1+1"), 1000),
        "inline_tool_round_trip_us": round(per_call, 1),
    }


def _header() -> str:
    import clambot_tools

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC | {platform.machine()}, "
        f"{os.cpu_count()} cores | Python {platform.python_version()} | "
        f"clambot_tools from {os.path.dirname(clambot_tools.__file__)} | load {load:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a checkout of another version to compare")
    parser.add_argument("--only", choices=["throughput", "reproducer", "ctrl_c", "costs"])
    args = parser.parse_args()
    figures = {
        "throughput": throughput,
        "reproducer": to_thread_reproducer,
        "ctrl_c": ctrl_c,
        "costs": run_costs,
    }
    print(_header())
    for name, fn in figures.items():
        if args.only and name != args.only:
            continue
        try:
            print(name, json.dumps(fn()))
        except Exception as exc:  # noqa: BLE001 - an old version may lack a feature
            print(name, json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.stdout.flush()
    if args.baseline:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.baseline))
        for only in ("throughput", "reproducer", "costs"):
            subprocess.run(
                [sys.executable, __file__, "--only", only], env=env, check=False, timeout=1800
            )


if __name__ == "__main__":
    main()
