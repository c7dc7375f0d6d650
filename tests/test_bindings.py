"""Bindings as a script sees them: async functions on the frozen global `tools`."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from clambot_tools import ConfigError, Limits, Policy, Sandbox, TransientError, _calls, binding


def test_sync_and_async_bindings_get_keyword_arguments() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    async def shout(text: str, times: int = 1) -> str:
        await asyncio.sleep(0)
        return text.upper() * times

    sb = Sandbox(bindings=[add, shout])
    res = sb.run("[await tools.add({a: 2, b: 3}), await tools.shout({text: 'hi', times: 2})]")
    assert res.value == [5, "HIHI"]
    assert res.stats.binding_calls == 2


def test_promise_all_runs_bindings_concurrently() -> None:
    # each call returns only once all three have started: run one after the other, the
    # first would wait in vain (and the run time out)
    lock = threading.Lock()
    started: list[str] = []
    all_started = threading.Event()

    def arrive(tag: str) -> None:
        with lock:
            started.append(tag)
            if len(started) == 3:
                all_started.set()

    def wait_sync(tag: str) -> str:
        arrive(tag)
        return tag if all_started.wait(20) else "alone"

    async def wait_async(tag: str) -> str:
        arrive(tag)
        return tag if await asyncio.to_thread(all_started.wait, 20) else "alone"

    sb = Sandbox(bindings=[wait_sync, wait_async], limits=Limits(timeout_s=30))
    res = sb.run(
        "await Promise.all([tools.wait_sync({tag: 'a'}), tools.wait_async({tag: 'b'}),"
        " tools.wait_sync({tag: 'c'})])"
    )
    assert res.value == ["a", "b", "c"]  # all three were in flight at once


def test_invalid_arguments_reject_with_type_error() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    sb = Sandbox(bindings=[add])
    res = sb.run(
        "const out = [];\n"
        "for (const args of [{a: 'x', b: 2}, {a: 1}, [1, 2], 'a', {a: 1, b: 2, c: 3}]) {\n"
        "  try { await tools.add(args); out.push('ok') }\n"
        "  catch (e) { out.push(e instanceof TypeError ? 'TypeError' : String(e)) }\n"
        "}\nout"
    )
    assert res.value == ["TypeError"] * 5
    msg = sb.run("await tools.add({a: 1})")
    assert msg.error is not None and msg.error.kind == "binding_failed"
    assert msg.error.name == "TypeError" and "b" in msg.error.message


def test_failing_binding_is_a_catchable_error_without_host_details() -> None:
    def fail(message: str) -> None:
        raise RuntimeError(message)

    sb = Sandbox(bindings=[fail])
    res = sb.run(
        "try { await tools.fail({message: 'disk full'}) }\n"
        "catch (e) { [e.name, e.message, String(e.stack)] }"
    )
    name, message, stack = res.value
    assert (name, message) == ("Error", "disk full")
    assert "Traceback" not in stack and ".py" not in stack and "RuntimeError" not in stack
    uncaught = sb.run("await tools.fail({message: 'x'})")
    assert uncaught.error is not None and uncaught.error.kind == "binding_failed"


def test_policy_denies_without_running_the_function() -> None:
    ran: list[str] = []

    @binding(effects=("write",))
    def delete_all() -> str:
        ran.append("delete_all")
        return "gone"

    def read() -> str:
        return "data"

    sb = Sandbox(bindings=[delete_all, read], policy=Policy(deny_effects=["write"]))
    res = sb.run("await tools.delete_all()")
    assert res.error is not None and res.error.kind == "binding_denied"
    assert ran == []
    only_read = Sandbox(bindings=[delete_all, read], policy=Policy(allow=["read"]))
    assert only_read.run("await tools.read()").value == "data"
    res = only_read.run("await tools.delete_all()")
    assert res.error is not None and res.error.kind == "binding_denied"
    assert ran == []


def test_call_cap_per_run() -> None:
    def ping() -> int:
        return 1

    sb = Sandbox(bindings=[ping], policy=Policy(max_calls=3))
    res = sb.run(
        "let n = 0; for (let i = 0; i < 5; i++) { try { n += await tools.ping() } catch (e) {} } n"
    )
    assert res.value == 3


def test_tools_object_is_frozen_and_names_need_not_be_identifiers() -> None:
    @binding(name="weather-now")
    def weather() -> str:
        return "sunny"

    sb = Sandbox(bindings=[weather])
    res = sb.run(
        "'use strict';\nlet e1 = 'no'; try { tools.x = 1 } catch (e) { e1 = e.name }\n"
        "[await tools['weather-now'](), Object.isFrozen(tools), e1, Object.keys(tools)]"
    )
    # the two built-ins for reading declarations come after the granted bindings
    assert res.value == ["sunny", True, "TypeError", ["weather-now", "$describe", "$search"]]


def test_pydantic_schema_and_json_only_results() -> None:
    class Query(BaseModel):
        q: str
        limit: int = 10

    def search(q: str, limit: int) -> dict[str, Any]:
        return {"q": q, "limit": limit, "nan": float("nan")}

    def bad() -> object:
        return object()

    sb = Sandbox(bindings=[binding(search, args_schema=Query), bad])
    assert sb.run("await tools.search({q: 'x'})").value == {"q": "x", "limit": 10, "nan": None}
    res = sb.run("await tools.bad()")
    assert res.error is not None and res.error.kind == "binding_failed"
    assert "not JSON" in res.error.message


def test_run_ends_while_calls_are_pending_without_hanging() -> None:
    release = threading.Event()

    def forever() -> None:
        release.wait(30)  # a call that would outlast the run

    sb = Sandbox(bindings=[forever], limits=Limits(timeout_s=2))
    t0 = time.monotonic()
    res = sb.run("tools.forever(); 'done without waiting'")
    elapsed = time.monotonic() - t0
    release.set()
    assert res.value == "done without waiting"
    assert elapsed < 1


def test_timeout_covers_time_spent_in_bindings() -> None:
    async def slow() -> None:
        await asyncio.sleep(10)

    sb = Sandbox(bindings=[slow], limits=Limits(timeout_s=0.3))
    t0 = time.monotonic()
    res = sb.run("await tools.slow()")
    assert res.error is not None and res.error.kind == "timeout"
    assert time.monotonic() - t0 < 2


def test_async_bindings_run_on_the_callers_loop_in_arun() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def where() -> str:
        seen.append(asyncio.get_running_loop())
        return "here"

    sb = Sandbox(bindings=[where])

    async def main() -> tuple[Any, asyncio.AbstractEventLoop]:
        res = await sb.arun("await tools.where()")
        return res.value, asyncio.get_running_loop()

    value, loop = asyncio.run(main())
    assert value == "here" and seen == [loop]


def test_duplicate_and_invalid_bindings_are_config_errors() -> None:
    def f() -> None: ...

    with pytest.raises(ConfigError):
        Sandbox(bindings=[f, binding(f)])
    with pytest.raises(ConfigError):
        binding(f, name="")
    with pytest.raises(ConfigError):
        binding(f, effects=("teleport",))  # type: ignore[arg-type]


def test_fast_sync_bindings_run_inline_and_keep_every_behaviour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what counts as fast is measured: on a busy machine a trivial call can take
    # longer than 100 us, so the bar is raised here; the path must be the inline one
    monkeypatch.setattr(_calls, "INLINE_BELOW_S", 1.0)
    calls = 0
    threads: set[int] = set()

    def inc(n: int) -> int:
        nonlocal calls
        calls += 1
        threads.add(threading.get_ident())
        if n < 0:
            raise ValueError("negative")
        return n + 1

    def big() -> str:
        return "x" * 200_000  # larger than the inline answer buffer

    sb = Sandbox(bindings=[inc, big], policy=Policy(max_calls=None))
    res = sb.run(
        "let s = 0; for (let i = 0; i < 500; i++) s += await tools.inc({n: i});\n"
        "const all = await Promise.all([1, 2, 3].map(n => tools.inc({n})));\n"
        "let err = ''; try { await tools.inc({n: -1}) } catch (e) { err = e.message }\n"
        "let bad = ''; try { await tools.inc({n: 'x'}) } catch (e) { bad = e.name }\n"
        "const b1 = (await tools.big()).length; const b2 = (await tools.big()).length;\n"
        "[s, all, err, bad, b1, b2]"
    )
    assert res.value == [sum(range(1, 501)), [2, 3, 4], "negative", "TypeError", 200_000, 200_000]
    assert calls == 504
    # after the first call (on the pool), every call ran inline on the driving thread
    assert len(threads) == 2, threads


def test_transient_error_in_an_inline_binding_is_still_retried() -> None:
    state = {"n": 0, "fail_next": False}

    def fast() -> int:
        state["n"] += 1
        if state["fail_next"]:
            state["fail_next"] = False
            raise TransientError("blip")
        return state["n"]

    sb = Sandbox(bindings=[fast], policy=Policy(retry_backoff_s=0))
    sb.run("for (let i = 0; i < 5; i++) await tools.fast()")  # now known to be fast
    state["fail_next"] = True
    res = sb.run("await tools.fast()")
    assert res.ok and isinstance(res.value, int)


def test_abandoned_async_calls_are_cancelled_not_leaked() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)  # a call that would outlast the run
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sb = Sandbox(bindings=[slow])

    async def main() -> tuple[Any, bool]:
        res = await sb.arun(
            "tools.slow(); await new Promise(r => setTimeout(r, 50)); 'not waiting'"
        )
        try:  # the cancellation lands on this loop
            await asyncio.wait_for(cancelled.wait(), 10)
        except asyncio.TimeoutError:
            return res.value, False
        return res.value, True

    assert asyncio.run(main()) == ("not waiting", True)


def test_calls_never_started_when_the_script_ends_first() -> None:
    ran: list[int] = []
    records: list[dict[str, Any]] = []

    def side_effect() -> None:
        ran.append(1)

    sb = Sandbox(bindings=[side_effect], audit=records.append)
    assert sb.run("tools.side_effect(); 'done'").value == "done"
    assert ran == []
    assert [(r["binding"], r["outcome"]) for r in records if r["event"] == "call"] == [
        ("side_effect", "abandoned")
    ]


def test_oversized_arguments_and_results_are_output_limits() -> None:
    def echo(**args: Any) -> Any:
        return args

    def huge() -> str:
        return "r" * 5000

    sb = Sandbox(bindings=[echo, huge], limits=Limits(max_result_bytes=1000))
    res = sb.run("await tools.echo({x: 'y'.repeat(2000)})")
    assert res.error is not None and res.error.kind == "output_limit"
    assert res.error.name == "RangeError"
    res = sb.run("await tools.huge()")
    assert res.error is not None and res.error.kind == "output_limit"
    assert "1000-byte limit" in res.error.message
    caught = sb.run("try { await tools.huge() } catch (e) { e.name }")
    assert caught.value == "RangeError"
