"""One Sandbox, many threads: runs are independent and the GIL is released in wasm."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from clambot_tools import Limits, Sandbox


def test_many_threads_share_one_sandbox(sandbox: Sandbox) -> None:
    def job(i: int) -> object:
        return sandbox.run(f"globalThis.mine = {i}; await null; mine * 2").value

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(job, range(64)))
    assert results == [i * 2 for i in range(64)]


def test_python_threads_progress_while_wasm_runs() -> None:
    sb = Sandbox(limits=Limits(timeout_s=10))
    ticks = 0
    counting, stop = threading.Event(), threading.Event()

    def count() -> None:
        nonlocal ticks
        counting.set()
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=count)
    t.start()
    assert counting.wait(10)
    before = ticks
    res = sb.run("let s = 0; for (let i = 0; i < 3e6; i++) s += i % 7; s")
    during = ticks - before
    stop.set()
    t.join()
    assert res.ok
    # with the GIL held for the whole run the counter would barely move
    assert during > 100_000


def test_timeouts_in_parallel_threads_are_each_enforced() -> None:
    sb = Sandbox(limits=Limits(timeout_s=0.3))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sb.run("while (true) {}"), range(4)))
    assert [r.error.kind for r in results if r.error] == ["timeout"] * 4


def test_arun_cancellation_stops_the_script() -> None:
    spinning = asyncio.Event()

    async def started() -> None:
        spinning.set()

    sb = Sandbox(bindings=[started], limits=Limits(timeout_s=30))

    async def main() -> float:
        task = asyncio.create_task(sb.arun("await tools.started(); while (true) {}"))
        await asyncio.wait_for(spinning.wait(), 10)  # the script is in its loop
        t0 = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return time.monotonic() - t0

    assert asyncio.run(main()) < 5
    assert sb.run("1 + 1").value == 2
