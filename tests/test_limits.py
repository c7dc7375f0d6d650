"""Every limit ends the run with the right kind, and the Sandbox stays usable."""

from __future__ import annotations

import time

import pytest

from clambot_tools import ConfigError, Limits, Sandbox


def _still_usable(sb: Sandbox) -> None:
    res = sb.run("1 + 1")
    assert res.ok and res.value == 2


@pytest.fixture(scope="module")
def fast() -> Sandbox:
    return Sandbox(limits=Limits(timeout_s=0.5, memory_mb=32))


@pytest.fixture(scope="module")
def roomy() -> Sandbox:
    """Memory tests: the time limit is far away (a busy machine fills 32 MiB slowly)."""
    return Sandbox(limits=Limits(timeout_s=60, memory_mb=32))


@pytest.mark.parametrize(
    "code",
    [
        "while (true) {}",
        "for (;;) { try { for (;;) {} } finally { continue; } }",
        "for (;;) { try { for (;;) {} } catch (e) {} }",
        "/(a+)+$/.test('a'.repeat(40) + '!')",
        "[3, 2, 1].sort(() => { for (;;) {} })",
        "function spin() { return Promise.resolve().then(() => { for(;;){} }); } await spin()",
        "await { then() { for (;;) {} } }",
        "({ get x() { for (;;) {} } })",
        "({ toJSON() { for (;;) {} } })",
    ],
)
def test_timeout_stops_every_kind_of_loop(fast: Sandbox, code: str) -> None:
    t0 = time.monotonic()
    res = fast.run(code)
    elapsed = time.monotonic() - t0
    assert res.error is not None and res.error.kind == "timeout", res.error
    assert "0.5 s time limit" in res.error.message
    assert elapsed < 5  # generous: the point is that it ends
    _still_usable(fast)


def test_timeout_keeps_the_stack_where_the_script_was(fast: Sandbox) -> None:
    res = fast.run("function busy() {\n  for (;;) {}\n}\nbusy();")
    assert res.error is not None and res.error.kind == "timeout"
    assert res.error.stack is not None and "busy" in res.error.stack
    assert "script.js:4" in res.error.stack


def test_timeout_covers_waiting_on_timers(fast: Sandbox) -> None:
    res = fast.run("await new Promise(r => setTimeout(r, 60_000))")
    assert res.error is not None and res.error.kind == "timeout"


@pytest.mark.parametrize(
    "code",
    [
        "const a = []; while (true) a.push(new Array(1e6).fill(1))",
        "let a = [1]; for (let i = 0; i < 40; i++) a = a.concat(a); a.length",
        "new Array(1 << 20).join('x'.repeat(512)).length",
        "const k = []; for (;;) k.push(new Float64Array(2 * 1024 * 1024))",
        "const m = new Map(); for (let i = 0; ; i++) m.set(i, 'v'.repeat(1024) + i)",
    ],
)
def test_memory_bomb_stops_under_cap(roomy: Sandbox, code: str) -> None:
    res = roomy.run(code)
    assert res.error is not None and res.error.kind == "memory", res.error
    assert "32 MiB" in res.error.message
    _still_usable(roomy)


def test_memory_cap_allows_garbage_to_be_collected() -> None:
    # 200 MiB allocated in total, never more than ~1 MiB alive at once. It takes 0.3-1 s
    # (more on a busy machine): the time limit is far away, only memory is under test.
    sb = Sandbox(limits=Limits(timeout_s=60, memory_mb=32))
    res = sb.run(
        "let n = 0; for (let i = 0; i < 200; i++) { n += new Array(131072).fill(i).length; } n"
    )
    assert res.ok and res.value == 200 * 131072


def test_memory_cap_holds_across_many_runs() -> None:
    sb = Sandbox(limits=Limits(timeout_s=2, memory_mb=16))
    for _ in range(20):
        res = sb.run("globalThis.keep = new Array(1.5e6).fill(1.5); keep.length")
        assert res.ok  # about 12 MiB each time: it fits because nothing is kept between runs
    res = sb.run("const a = new Array(1.5e6).fill(1.5); const b = new Array(1.5e6).fill(2.5); 1")
    assert res.error is not None and res.error.kind == "memory"


@pytest.mark.parametrize(
    "code",
    [
        "function f() { return f() + 1; } f()",
        "const o = { toString() { return '' + this; } }; String(o)",
        "const o = { toJSON() { return JSON.stringify(this); } }; JSON.stringify(o)",
        "[2, 1].sort(function cmp(a, b) { return [b, a].sort(cmp)[0] - a; })",
        "let a = []; for (let i = 0; i < 200000; i++) a = [a]; a.flat(Infinity).length",
        "let p = []; for (let i = 0; i < 200000; i++) p = new Proxy(p, {}); Array.isArray(p)",
    ],
)
def test_deep_recursion_is_a_stack_error(sandbox: Sandbox, code: str) -> None:
    res = sandbox.run(code)
    if res.ok:  # the engine may finish iterative cases; it must never crash
        _still_usable(sandbox)
        return
    assert res.error is not None and res.error.kind == "stack", res.error
    _still_usable(sandbox)


def test_recursion_a_model_needs_is_allowed(sandbox: Sandbox) -> None:
    res = sandbox.run("function d(n) { return n === 0 ? 0 : 1 + d(n - 1); } d(1000)")
    assert res.ok and res.value == 1000


def test_stack_overflow_is_catchable_in_js(sandbox: Sandbox) -> None:
    res = sandbox.run("function f() { f() }\ntry { f() } catch (e) { e instanceof RangeError }")
    assert res.value is True


def test_stack_kb_sets_the_depth() -> None:
    depth = "let d = 0; function g() { d++; g() } try { g() } catch (e) {} d"
    small = Sandbox(limits=Limits(stack_kb=128)).run(depth).value
    big = Sandbox(limits=Limits(stack_kb=896)).run(depth).value
    assert isinstance(small, int) and isinstance(big, int)
    assert big > 4 * small


def test_log_flood_is_an_output_error_and_keeps_what_fit() -> None:
    sb = Sandbox(limits=Limits(max_log_bytes=1000))
    res = sb.run("for (let i = 0; i < 1e6; i++) console.log('line', i)")
    assert res.error is not None and res.error.kind == "output_limit"
    assert 0 < sum(len(e.message) for e in res.logs) <= 1100
    res = sb.run("console.log('y'.repeat(5000)); 'done'")
    assert res.error is not None and res.error.kind == "output_limit"


def test_logs_under_the_limit_pass() -> None:
    res = Sandbox(limits=Limits(max_log_bytes=1000)).run("console.log('x'.repeat(990)); 1")
    assert res.ok


def test_result_cap_at_and_past_the_boundary() -> None:
    sb = Sandbox(limits=Limits(max_result_bytes=1000))
    assert sb.run("'z'.repeat(998)").ok  # 998 chars + 2 quotes = 1000 bytes
    res = sb.run("'z'.repeat(999)")
    assert res.error is not None and res.error.kind == "output_limit"
    res = sb.run("Array.from({length: 1e6}, (_, i) => i)")
    assert res.error is not None and res.error.kind == "output_limit"


def test_sparse_array_with_huge_length_does_not_hang(fast: Sandbox) -> None:
    res = fast.run("const a = []; a[2 ** 32 - 2] = 1; a")
    assert res.error is not None and res.error.kind in ("output_limit", "timeout")


def test_fuel_is_a_deterministic_budget() -> None:
    sb = Sandbox(limits=Limits(fuel=200_000_000, timeout_s=10))
    res = sb.run("let s = 0; for (let i = 0; i < 1e5; i++) s += i; s")
    assert res.ok and res.stats.fuel_used is not None and res.stats.fuel_used > 0
    again = sb.run("let s = 0; for (let i = 0; i < 1e5; i++) s += i; s")
    assert again.stats.fuel_used == res.stats.fuel_used
    res = sb.run("while (true) {}")
    assert res.error is not None and res.error.kind == "timeout"
    assert "fuel" in res.error.message


@pytest.mark.parametrize(
    "bad",
    [dict(timeout_s=0), dict(memory_mb=1), dict(stack_kb=5000), dict(max_result_bytes=1)],
)
def test_invalid_limits_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)  # type: ignore[arg-type]


def test_limits_must_be_limits() -> None:
    with pytest.raises(ConfigError):
        Sandbox(limits={"timeout_s": 1})  # type: ignore[arg-type]
