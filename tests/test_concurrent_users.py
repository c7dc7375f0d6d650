"""Many users' scripts in one async process (issue 10): runs never use a pool that user
code or frameworks also need, one run cannot starve its neighbours, and work a run
started does not outlive it."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from typing import Any

from clambot_tools import Limits, Sandbox, binding, current_call

SLEEP_S = 0.05


async def _async_work(i: int) -> int:
    await asyncio.sleep(SLEEP_S)
    return i


def _sync_work(i: int) -> int:
    time.sleep(SLEEP_S)
    return i


async def _to_thread_work(i: int) -> int:
    return await asyncio.to_thread(_sync_work, i)


def test_scripts_do_not_hold_the_default_executor_that_their_tools_need() -> None:
    # The reproducer of issue 10.1: with the guest on asyncio's default executor
    # (min(32, cpu+4) threads), six scripts awaiting `to_thread` tools deadlocked a
    # 2-core machine until every run timed out.
    async def work(i: int) -> int:
        return await asyncio.to_thread(lambda: i)

    sb = Sandbox(bindings=[binding(work)], limits=Limits(timeout_s=10))

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(cf.ThreadPoolExecutor(max_workers=2))  # a small machine
        return await asyncio.gather(*[sb.arun(f"await tools.work({{i: {i}}})") for i in range(12)])

    results = asyncio.run(main())
    assert [r.value for r in results] == list(range(12)), [r.error for r in results]


def test_64_concurrent_scripts_of_10_sequential_calls_each() -> None:
    """The load test: 64 scripts at once in one loop, each awaiting 10 calls one after
    another to async, sync and to_thread tools that sleep 50 ms. Ideal: 0.5 s."""
    sb = Sandbox(
        bindings=[
            binding(_async_work, name="a"),
            binding(_sync_work, name="s"),
            binding(_to_thread_work, name="t"),
        ],
        limits=Limits(timeout_s=30),
    )
    code = (
        "let n = 0; const kinds = ['a', 's', 't'];\n"
        "for (let i = 0; i < 10; i++) n += await tools[kinds[i % 3]]({i});\nn"
    )

    async def main() -> tuple[list[Any], float]:
        # `to_thread` tools run on the loop's default executor, which is the user's:
        # at its default size here (6 threads) 64 x 3 x 50 ms of to_thread sleeps alone
        # need >= 1.6 s, whatever the sandbox does; a server for 64 users sizes it so.
        asyncio.get_running_loop().set_default_executor(cf.ThreadPoolExecutor(64))
        t0 = time.monotonic()
        results = await asyncio.gather(*[sb.arun(code) for _ in range(64)])
        return results, time.monotonic() - t0

    results, elapsed = asyncio.run(main())
    assert [r.error for r in results if not r.ok] == []
    assert all(r.value == 45 for r in results)
    assert elapsed < 3 * 10 * SLEEP_S, f"{elapsed:.2f} s for 64 scripts of 10 x 50 ms calls"


def test_a_flooding_script_does_not_starve_another_sandbox() -> None:
    """A hostile script fans out a thousand slow sync calls; meanwhile another Sandbox's
    runs (each with a sync tool call) keep their usual pace, and after the hostile run
    ends none of its calls is still running 100 ms later."""
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow() -> None:  # a well-behaved binding: it stops when its run is over
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            ctx = current_call()
            assert ctx is not None
            over = threading.Event()
            ctx.on_cancel(over.set)
            over.wait(30)
        finally:
            with lock:
                running -= 1

    hostile = Sandbox(bindings=[slow], limits=Limits(timeout_s=1.0))
    neighbour = Sandbox(bindings=[binding(lambda: 1, name="one")], limits=Limits(timeout_s=5))
    hostile_result: list[Any] = []

    def attack() -> None:
        hostile_result.append(
            hostile.run("await Promise.all(Array.from({length: 1000}, () => tools.slow()))")
        )

    attacker = threading.Thread(target=attack)
    attacker.start()
    durations: list[float] = []
    while attacker.is_alive() and len(durations) < 100:
        t0 = time.monotonic()
        res = neighbour.run("await tools.one() + 1")
        durations.append(time.monotonic() - t0)
        assert res.value == 2, res.error
    attacker.join()
    (res,) = hostile_result
    assert res.error is not None and res.error.kind == "timeout"
    assert peak <= Limits().max_concurrent_calls  # the run's own cap, not the process's
    assert max(durations) < 1.0, f"a neighbour run took {max(durations):.2f} s"
    stop_by = time.monotonic() + 0.1
    while running and time.monotonic() < stop_by:
        time.sleep(0.002)
    assert running == 0, f"{running} calls of the hostile run still running 100 ms later"


def test_the_background_loop_keeps_no_callers_context() -> None:
    # The private loop for async bindings of sync runs is made on first use, inside
    # whatever context the first caller had (a LangGraph run's, holding its graph):
    # the loop must not keep that context alive for the life of the process.
    import subprocess
    import sys

    code = """
import contextvars, gc, weakref
from clambot_tools import Sandbox

class Big:
    pass

var = contextvars.ContextVar("run_state")
big = Big()
ref = weakref.ref(big)

async def ping() -> str:
    return "pong"

def first_run() -> str:
    var.set(big)
    return Sandbox(bindings=[ping]).run("await tools.ping()").value

ctx = contextvars.copy_context()
assert ctx.run(first_run) == "pong"
del ctx, big
gc.collect()
print("collected" if ref() is None else "kept alive")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "collected"
