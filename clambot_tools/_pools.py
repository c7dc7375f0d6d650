"""The package's own threads and event loop: nothing here is shared with user code.

asyncio's default executor (``run_in_executor(None, ...)``, ``asyncio.to_thread``,
LangChain's sync-tool ``ainvoke``) has min(32, cpu+4) threads: a script holding one of
those while it awaits a tool that needs another deadlocks a small machine. So runs and
sync bindings get pools of their own, which grow on demand (idle threads are reused)
up to a high cap; each run also caps how many of its calls run at once
(`Limits.max_concurrent_calls`), so one run cannot take the whole pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import TYPE_CHECKING

from ._once import Registry

if TYPE_CHECKING:  # asyncio costs ~11 ms to import: only runs that need it pay
    import asyncio

#: runs driven at once on package threads (`arun`, and `run` when it must not block
#: on a binding); beyond it runs wait their turn
RUN_THREADS = 1024
#: sync binding calls running at once in the whole process
CALL_THREADS = 512

_pools: Registry[str, cf.ThreadPoolExecutor] = Registry()
_loops: Registry[str, asyncio.AbstractEventLoop] = Registry()


def run_pool() -> cf.ThreadPoolExecutor:
    """Threads that drive runs (the guest and its eval loop)."""
    return _pools.get(
        "run", lambda: cf.ThreadPoolExecutor(RUN_THREADS, thread_name_prefix="clambot-run")
    )


def call_pool() -> cf.ThreadPoolExecutor:
    """Threads that run sync bindings and sync approvers."""
    return _pools.get(
        "call", lambda: cf.ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="clambot-call")
    )


def background_loop() -> asyncio.AbstractEventLoop:
    """An event loop on a daemon thread, for async bindings called from sync `run`."""

    def make() -> asyncio.AbstractEventLoop:
        import asyncio
        import contextvars

        # made in an empty context: the loop's own handles (its self-pipe reader) keep
        # the context they were made in, which must not be the first caller's (a
        # LangGraph run's, say) for the life of the process
        loop = contextvars.Context().run(asyncio.new_event_loop)
        threading.Thread(target=loop.run_forever, name="clambot-async", daemon=True).start()
        return loop

    return _loops.get("background", make)
