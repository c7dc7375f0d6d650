"""The bytecode cache: a script run again starts from the bytecode its first run
compiled, behaves exactly as a fresh run of its source, and the cache refuses any entry
that is damaged or that it did not make (QuickJS's bytecode reader trusts its input)."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import threading
from typing import Any

import pytest
import test_hostile as hostile

from clambot_tools import BytecodeCache, Limits, Policy, RunResult, Sandbox, binding
from clambot_tools._bytecode import code_digest
from clambot_tools._guest import Guest

LONG = "// " + "padding so the script is long enough to be kept. " * 12 + "\n"


def _cache(**kw: Any) -> BytecodeCache:
    return BytecodeCache(min_source_chars=0, **kw)


def _same(a: RunResult, b: RunResult) -> None:
    """What a user sees of two runs is the same (durations aside)."""
    assert a.ok == b.ok
    assert json.dumps(a.value, default=str) == json.dumps(b.value, default=str)
    assert [(e.level, e.message) for e in a.logs] == [(e.level, e.message) for e in b.logs]
    if a.error is None or b.error is None:
        assert a.error == b.error
    else:
        assert a.error.model_dump() == b.error.model_dump()


@binding
def double(x: int) -> int:
    return 2 * x


SCRIPTS = {
    "last expression": "const xs = [1, 2, 3];\nxs.map((x) => x * 2)",
    "top-level await": "const v = await Promise.resolve(41);\nv + 1",
    "tools call": "const r = await tools.double({x: 21});\n({r})",
    "parallel tools": "(await Promise.all([1, 2, 3].map((x) => tools.double({x})))).join()",
    "console": "console.log('a', {b: 1});\nconsole.warn('w');\n7",
    "runtime error line and column": "const a = 1;\n  const b = null;\n  b.x.y",
    "thrown non-error": "throw {code: 7}",
    "async rejection": "await Promise.reject(new RangeError('nope'))",
    "timer": "await new Promise((r) => setTimeout(r, 5));\n'late'",
    "function source": "function f(a, b) { return a + b }\nf.toString()",
    "error stack": "function inner() { throw new Error('deep') }\n"
    "function outer() { inner() }\nouter()",
    "unicode column": "const s = 'éé';\nconst t = 'ü'; null.x",
    "var then global": "var g = 5;\nglobalThis.g + 1",
    "timeout": "for (;;) {}",
    "memory": "const a = [];\nfor (;;) a.push('x'.repeat(1 << 16) + a.length)",
    "stack": "function f() { return f() + 1 }\nf()",
    "result too large": "'x'.repeat(1 << 21)",
    "tool denied": "await tools.secret({})",
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_cached_run_behaves_like_a_fresh_run_of_the_source(name: str) -> None:
    code = LONG + SCRIPTS[name]

    @binding
    def secret() -> str:
        return "no"

    kw: dict[str, Any] = {
        "limits": Limits(timeout_s=1, memory_mb=16),
        "bindings": [double, secret],
        "policy": Policy(allow=["double"]),
    }
    fresh = Sandbox(bytecode_cache=False, **kw).run(code)
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache, **kw)
    first = sb.run(code)  # compiles and keeps the bytecode
    second = sb.run(code)  # starts from it
    assert cache.stats().hits == 1 and cache.stats().misses == 1
    _same(fresh, first)
    _same(fresh, second)


def test_repeat_run_hits_the_cache_and_parses_nothing() -> None:
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache)
    code = LONG + "[1, 2, 3].reduce((a, b) => a + b)"
    assert sb.run(code).value == 6
    assert cache.stats().entries == 1 and cache.stats().misses == 1
    for _ in range(3):
        assert sb.run(code).value == 6
    s = cache.stats()
    assert (s.hits, s.misses, s.entries) == (3, 1, 1)
    # another Sandbox sharing the cache hits too; the asyncio twin as well
    assert asyncio.run(Sandbox(bytecode_cache=cache).arun(code)).value == 6
    assert cache.stats().hits == 4


def test_the_shared_cache_is_the_default_and_short_scripts_skip_it() -> None:
    from clambot_tools._bytecode import shared_cache

    sb = Sandbox()
    before = shared_cache().stats()
    assert sb.run("1 + 1").value == 2  # shorter than min_source_chars: a plain eval
    assert shared_cache().stats() == before
    code = LONG + "'kept by the shared cache'"
    sb.run(code)
    sb.run(code)
    after = shared_cache().stats()
    assert after.hits >= before.hits + 1


def test_syntax_errors_are_not_kept() -> None:
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache)
    for _ in range(2):
        res = sb.run("let x = ;")
        assert res.error is not None and res.error.kind == "syntax"
        assert (res.error.line, res.error.column) == (1, 9)
    assert cache.stats().entries == 0


def _only_entry(cache: BytecodeCache) -> tuple[tuple[str, str], tuple[bytes, bytes]]:
    [(key, entry)] = cache._entries.items()
    return key, entry


def test_a_corrupted_entry_is_refused_and_the_script_compiled_again() -> None:
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache)
    code = LONG + "const o = {a: [1, 2, 3]};\no.a.map((x) => x + 1)"
    assert sb.run(code).value == [2, 3, 4]
    key, (bytecode, mac) = _only_entry(cache)
    for flip in (len(bytecode) // 2, len(bytecode) - 1, 0):
        damaged = bytearray(bytecode)
        damaged[flip] ^= 0x40
        cache._entries[key] = (bytes(damaged), mac)
        res = sb.run(code)
        assert res.ok and res.value == [2, 3, 4]
        assert cache._entries[key] == (bytecode, mac)  # compiled again, a good entry kept
    assert cache.stats().refused == 3
    # a cut entry and an empty one are refused the same way
    for damaged_bytes in (bytecode[:-7], b""):
        cache._entries[key] = (damaged_bytes, mac)
        assert sb.run(code).value == [2, 3, 4]
    assert cache.stats().refused == 5


def test_an_entry_the_cache_did_not_make_is_refused() -> None:
    mine, theirs = _cache(), _cache()
    code = LONG + "'which cache?'"
    Sandbox(bytecode_cache=theirs).run(code)
    key, entry = _only_entry(theirs)
    # bytes (and MAC) made by another cache are foreign here: its key made the MAC
    mine._entries[key] = entry
    assert Sandbox(bytecode_cache=mine).run(code).value == "which cache?"
    assert mine.stats().refused == 1 and mine.stats().hits == 0
    # valid bytecode of another script put under this script's key is refused too
    Sandbox(bytecode_cache=mine).run(LONG + "'another script'")
    other_key = next(k for k in mine._entries if k != key)
    mine._entries[key] = mine._entries[other_key]
    assert Sandbox(bytecode_cache=mine).run(code).value == "which cache?"
    assert mine.stats().refused == 2


def test_entries_are_keyed_by_the_guest_build() -> None:
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache)
    code = LONG + "'built once'"
    sb.run(code)
    (build, digest), entry = _only_entry(cache)
    assert build == sb._image.guest_sha256 and digest == code_digest(code)
    # an entry made for another build is never looked up by this one...
    cache._entries.clear()
    cache._entries[("another-build", digest)] = entry
    assert sb.run(code).value == "built once"
    assert cache.stats().hits == 0
    # ...and moved under this build's key, its MAC (which covers the build) fails
    cache._entries.clear()
    cache._entries[(build, digest)] = (
        entry[0],
        cache._mac("another-build", digest, entry[0]),
    )
    assert sb.run(code).value == "built once"
    assert cache.stats().refused == 1


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = _cache(max_entries=3)
    sb = Sandbox(bytecode_cache=cache)
    for i in range(5):
        sb.run(LONG + f"{i}")
    s = cache.stats()
    assert (s.entries, s.evicted) == (3, 2)
    one = s.bytes // 3
    small = _cache(max_bytes=2 * one + one // 2)
    sb = Sandbox(bytecode_cache=small)
    for i in range(4):
        sb.run(LONG + f"{i}")
    assert small.stats().entries == 2 and small.stats().bytes <= small.max_bytes
    # the most recently used stays
    sb.run(LONG + "3")
    assert small.stats().hits == 1


def test_sessions_never_keep_bytecode() -> None:
    cache = _cache()
    sb = Sandbox(bytecode_cache=cache)
    with sb.session() as s:
        s.run(LONG + "globalThis.tampered = 1")
        s.run(LONG + "2")
    assert cache.stats().entries == 0


def test_a_guest_that_ran_a_script_is_not_a_source_of_bytecode() -> None:
    sb = Sandbox()
    caps = (64 << 20, 1 << 20, 512 * 1024, 1)
    with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
        assert g.pristine
        g.compile(b"", b"1", *caps)
        assert g.pristine  # compiling runs nothing
        g.start()
        assert not g.pristine


def test_fuel_turns_the_cache_off() -> None:
    cache = _cache()
    sb = Sandbox(limits=Limits(fuel=10**9), bytecode_cache=cache)
    code = LONG + "1 + 1"
    a, b = sb.run(code), sb.run(code)
    assert a.value == b.value == 2
    assert a.stats.fuel_used == b.stats.fuel_used  # the budget does not depend on a cache
    assert cache.stats().entries == 0


# -- the hostile corpus (tests/test_hostile.py's cases and rules), from the cache


def judge_from_cache(case: dict[str, Any]) -> None:
    """Judge one hostile case as tests/test_hostile.py does, its script (and the one it
    runs after) started from bytecode kept by an earlier compile."""
    calls = hostile.Calls()
    bindings = hostile.make_bindings(calls)
    cache = _cache()
    policy = Policy(allow=case["bindings_needed"])
    sb = Sandbox(limits=hostile.LIMITS, bindings=bindings, policy=policy, bytecode_cache=cache)
    before = hostile.BY_ID[case["run_after"]]["code"] if "run_after" in case else None
    for code in (before, case["code"]):
        if code is not None:
            _populate(sb, cache, code)
    kept = cache.stats().entries
    if before is not None:
        hostile._run_with_watchdog(sb, before)
    res = hostile._run_with_watchdog(sb, case["code"])

    error = res.error.model_dump() if res.error else None
    texts = hostile._strings([res.value, [e.message for e in res.logs], error])
    for secret in hostile.SECRETS:
        assert not any(secret in t for t in texts), f"{secret} leaked"
    assert calls.secret == [], "secret_admin ran"
    for name in case.get("assert_not_called", []):
        assert name not in calls.ran, f"{name} ran"
    assert not hostile.PWNED.exists()
    outcome = hostile._outcome(res)
    assert outcome in [case["expect"], *case.get("accept", [])], (outcome, res.error)
    if outcome == "ok":
        if "expected_result" in case:
            assert hostile._same(res.value, case["expected_result"]), res.value
        if "expected_result_one_of" in case:
            assert any(hostile._same(res.value, r) for r in case["expected_result_one_of"])
    # every script that compiled started from the cache
    assert cache.stats().hits == kept, (cache.stats(), kept)
    assert hostile._run_with_watchdog(sb, "1 + 1").value == 2


_verdicts: dict[str, BaseException | None] = {}
_verdicts_lock = threading.Lock()


def _slow_verdict(case: dict[str, Any]) -> None:
    """The cases that run into the time limit, judged together on threads (as
    tests/test_hostile.py does) the first time one is asked for."""
    with _verdicts_lock:
        if not _verdicts:

            def verdict(c: dict[str, Any]) -> BaseException | None:
                try:
                    judge_from_cache(c)
                except BaseException as exc:  # noqa: BLE001 - re-raised by its own test
                    return exc
                return None

            slow = [c for c in hostile.CASES if hostile._is_slow(c)]
            with cf.ThreadPoolExecutor(hostile.BATCH_THREADS) as threads:
                results = list(threads.map(verdict, slow))
            _verdicts.update(zip((c["id"] for c in slow), results, strict=True))
    exc = _verdicts[case["id"]]
    if exc is not None:
        raise exc


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SANDBOX_CANARY_ENV", hostile.CANARY_ENV)
    hostile._plant_canary_file()
    hostile.PWNED.unlink(missing_ok=True)
    yield
    assert not hostile.PWNED.exists()
    assert hostile.CANARY_FILE.read_text() == hostile.CANARY_FILE_TEXT


@pytest.mark.parametrize("case", [hostile._param(c) for c in hostile.CASES])
def test_hostile_case_from_the_cache(case: dict[str, Any], canaries: Any) -> None:
    """Every hostile case, started from bytecode its first run kept."""
    if hostile._is_slow(case):
        _slow_verdict(case)
    else:
        judge_from_cache(case)


def _populate(sb: Sandbox, cache: BytecodeCache, code: str) -> None:
    """Compile `code` in a fresh guest and keep its bytecode, as a first run would."""
    from clambot_tools._abi import State

    with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
        out = g.compile(
            sb._names_block, code.encode("utf-8", "surrogatepass"), 64 << 20, 1 << 20, 524288, 1
        )
    if out.state == State.READY:
        cache._put(sb._image.guest_sha256, code_digest(code), out.payload)
