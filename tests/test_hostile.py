"""Every case of tests/hostile/sample.json (the shared hostile corpus, kept in the
repository) and tests/hostile/extra.json (cases written against this implementation's
seams), judged as their README (tests/hostile/README.md) says.

For each case: the four standard bindings are granted and only `bindings_needed` is
allowed; canaries are planted in the environment and in /tmp; the run happens under an
outer watchdog; then the outcome, the canaries, `secret_admin` (and every binding in
`assert_not_called`) and the host's health (a sentinel tool call and `1 + 1`) are
checked. A case with `run_after` runs right after the case it names, on the same
Sandbox object.

Cases that run into the time limit take the whole limit; they are judged together on
a few threads (each under its own watchdog), so the file stays fast. Extra cases that
fail today are listed in KNOWN_FAILING with the reason, as strict xfails: when one is
fixed, its xfail turns into a failure that asks for its removal from the list.

Some cases are also run from a caller 200 Python frames deep and through `arun`
(ALSO_DEEP_AND_ASYNC): the ones where the caller's stack or event loop could matter.
The ones that hit a limit are also run inside a session (SESSION_CASES), which must be
rolled back and stay usable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import Limits, Policy, RunResult, Sandbox, Session, binding

HOSTILE = Path(os.environ.get("CLAMBOT_HOSTILE_DIR", Path(__file__).resolve().parent / "hostile"))
SAMPLE: list[dict[str, Any]] = json.loads((HOSTILE / "sample.json").read_text())
_EXTRA_FILE = Path(__file__).resolve().parent / "hostile" / "extra.json"
EXTRA: list[dict[str, Any]] = json.loads(_EXTRA_FILE.read_text())
CASES = SAMPLE + EXTRA
BY_ID = {c["id"]: c for c in CASES}
LIMITS = Limits(timeout_s=2, memory_mb=64, max_log_bytes=1 << 20, max_result_bytes=1 << 20)
WATCHDOG_S = 4 * LIMITS.timeout_s + 10
CANARY_ENV, CANARY_FILE_TEXT = "canary-env-5d1f0b", "canary-file-8c2e7a"
CANARY_FILE, PWNED = Path("/tmp/sandbox_canary.txt"), Path("/tmp/pwned_by_sandbox")
SECRETS = (CANARY_ENV, CANARY_FILE_TEXT, "root:x:0:0")
#: the README's optional check: the host's memory must not stay this far above where
#: it was before the case
MEMORY_SLACK = 256 << 20
KIND_TO_OUTCOME = {
    "timeout": "error:timeout",
    "memory": "error:memory",
    "stack": "error:stack",
    "output_limit": "error:output",
    "syntax": "error:syntax",
    "runtime": "error:runtime",
    "internal": "error:runtime",
    "binding_denied": "error:binding_denied",
    "binding_failed": "error:binding_failed",
}

#: extra cases that fail on today's main: id -> why (each is a strict xfail)
KNOWN_FAILING: dict[str, str] = {
    "bind-echo-floats-under-cap": (
        "_bindings.to_json_bytes encodes floats with Python's repr (1e-07, not JavaScript's "
        "1e-7): 20% larger than the arguments, and over the result cap"
    ),
    "res-plain-error-mentioning-call-stack": (
        "a RangeError the script makes with the engine's exact stack-overflow message is "
        "indistinguishable from the engine's own (same prototype, same text): kind stack"
    ),
}

#: extra cases that fail on today's main only sometimes (a race): non-strict xfails
KNOWN_FLAKY: dict[str, str] = {}

#: extra cases that pass alone but fail in a session (test_hostile_case_in_session)
KNOWN_FAILING_IN_SESSION: dict[str, str] = {}

#: extra cases that hit a limit, also run in a session: such a run is rolled back
SESSION_CASES = [
    c
    for c in EXTRA
    if c["expect"] in ("error:timeout", "error:memory", "error:stack", "error:output")
    and "run_after" not in c
]

#: extra cases also run from a caller 200 frames deep and through arun: deep values both
#: ways, large values, many calls, errors and their wording
ALSO_DEEP_AND_ASYNC = [
    "stack-deep-result-at-1000",
    "stack-deep-result-999-under-deep-caller",
    "stack-final-value-100k-deep",
    "stack-tool-call-800-frames-deep",
    "stack-tool-failure-900-frames-deep",
    "bind-echo-result-990-deep",
    "bind-echo-args-500-deep",
    "bind-args-50k-keys",
    "bind-inline-cap-boundary-results",
    "bind-inline-cap-boundary-failures",
    "bind-promise-all-1000-at-the-call-cap",
    "bind-many-unawaited-calls-then-value",
    "bind-257-caught-failures-then-uncaught",
    "bind-error-call-text",
    "res-object-50k-keys",
    "res-result-900kib-string",
    "res-bigint-5000-digits",
    "res-throw-stack-with-4400-digit-line",
    "out-result-exactly-cap",
    "out-tool-arguments-exactly-cap",
    "syn-result-odd-characters",
    "syn-tool-roundtrip-odd-characters",
]


# ---------------------------------------------------------------- the four bindings


class Calls:
    """Which of a case's bindings ran, and what secret_admin was given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: dict[str, int] = {}
        self.secret: list[Any] = []

    def note(self, name: str) -> None:
        with self.lock:
            self.ran[name] = self.ran.get(name, 0) + 1


def make_bindings(calls: Calls) -> list[Any]:
    """echo, add, fail and secret_admin as the README defines them, each noting its calls."""

    def echo(**args: Any) -> Any:
        calls.note("echo")
        return args

    def add(a: Any = None, b: Any = None) -> Any:
        calls.note("add")
        for v in (a, b):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError("add needs two numbers")
        return a + b

    def fail(message: str = "boom") -> None:
        calls.note("fail")
        raise RuntimeError(message)

    def secret_admin(**args: Any) -> str:
        calls.note("secret_admin")
        calls.secret.append(args)
        return "PWNED"

    return [binding(echo), binding(add), binding(fail), binding(secret_admin)]


# ---------------------------------------------------------------- running and judging


def _outcome(res: RunResult) -> str:
    return "ok" if res.ok else KIND_TO_OUTCOME[res.error.kind if res.error else "internal"]


def _strings(value: Any) -> list[str]:
    """Every string (keys included) in a JSON-like value, at any depth, without recursion."""
    out: list[str] = []
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(k for k in v if isinstance(k, str))
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
    return out


def _same(a: Any, b: Any) -> bool:
    """JSON-normalised equality (tuples are lists, ints equal floats), at any depth."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return False
            todo.extend(zip(x, y, strict=True))
        elif isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            todo.extend((x[k], y[k]) for k in x)
        elif isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if not (x == y or (isinstance(x, float) and math.isnan(x) and y != y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _deep(n: int, f: Callable[[], RunResult]) -> RunResult:
    return f() if n == 0 else _deep(n - 1, f)


def _call(sb: Sandbox | Session, code: str, how: str) -> RunResult:
    if how == "deep":  # from a caller 200 Python frames deep
        return _deep(200, lambda: sb.run(code))
    if how == "arun":
        return asyncio.run(sb.arun(code))
    return sb.run(code)


def _run_with_watchdog(sb: Sandbox | Session, code: str, how: str = "run") -> RunResult:
    box: list[RunResult | BaseException] = []

    def target() -> None:
        try:
            box.append(_call(sb, code, how))
        except BaseException as exc:  # noqa: BLE001 - reported as the failure below
            box.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(WATCHDOG_S)
    assert not t.is_alive(), f"watchdog fired after {WATCHDOG_S} s"
    (res,) = box
    assert isinstance(res, RunResult), f"an exception escaped the API: {res!r}"
    return res


def judge(case: dict[str, Any], how: str = "run", *, check_memory: bool = True) -> None:
    """Run one case as the README says and assert every rule (AssertionError if not)."""
    calls = Calls()
    bindings = make_bindings(calls)
    sb = Sandbox(limits=LIMITS, bindings=bindings, policy=Policy(allow=case["bindings_needed"]))
    rss_before = _rss()
    if "run_after" in case:
        _run_with_watchdog(sb, BY_ID[case["run_after"]]["code"], how)
    res = _run_with_watchdog(sb, case["code"], how)

    error = res.error.model_dump() if res.error else None
    texts = _strings([res.value, [e.message for e in res.logs], error])
    for secret in SECRETS:
        assert not any(secret in t for t in texts), f"{secret} leaked"
    assert calls.secret == [], "secret_admin ran"
    for name in case.get("assert_not_called", []):
        assert name not in calls.ran, f"{name} ran"
    assert not PWNED.exists()
    assert CANARY_FILE.read_text() == CANARY_FILE_TEXT

    outcome = _outcome(res)
    assert outcome in [case["expect"], *case.get("accept", [])], (outcome, res.error)
    if outcome == "ok":
        if "expected_result" in case:
            assert _same(res.value, case["expected_result"]), res.value
        if "expected_result_one_of" in case:
            assert any(_same(res.value, r) for r in case["expected_result_one_of"]), res.value
    del res, texts, error

    # the host is still usable
    assert _run_with_watchdog(sb, "1 + 1", how).value == 2
    sentinel = Sandbox(limits=LIMITS, bindings=bindings, policy=Policy(allow=["echo"]))
    alive = _run_with_watchdog(sentinel, 'await tools.echo({text: "alive"})', how)
    assert alive.value == {"text": "alive"}, alive
    if check_memory:
        grown = _rss() - rss_before
        assert grown < MEMORY_SLACK, f"the host kept {grown >> 20} MiB more after the case"


def judge_in_session(case: dict[str, Any]) -> None:
    """Run one case inside a session, after a run that sets a global: the outcome must be
    the case's, and since a run that hits a limit is rolled back (README), the session
    must afterwards hold the global as before and run normally."""
    calls = Calls()
    bindings = make_bindings(calls)
    sb = Sandbox(limits=LIMITS, bindings=bindings, policy=Policy(allow=case["bindings_needed"]))
    with sb.session() as s:
        assert _run_with_watchdog(s, "globalThis.marker = 41; 'set'").value == "set"
        res = _run_with_watchdog(s, case["code"])
        assert calls.secret == [], "secret_admin ran"
        for name in case.get("assert_not_called", []):
            assert name not in calls.ran, f"{name} ran"
        outcome = _outcome(res)
        assert outcome in [case["expect"], *case.get("accept", [])], (outcome, res.error)
        # an object: converting it checks the interrupt flag, so a flag left set shows
        after = _run_with_watchdog(s, "({ marker: marker + 1 })")
        assert after.value == {"marker": 42}, after
    sentinel = Sandbox(limits=LIMITS, bindings=bindings, policy=Policy(allow=["echo"]))
    alive = _run_with_watchdog(sentinel, 'await tools.echo({text: "alive"})')
    assert alive.value == {"text": "alive"}, alive


def _is_slow(case: dict[str, Any]) -> bool:
    """Whether judging the case takes the whole time limit (it runs into it, or runs after
    one that does)."""
    if "run_after" in case and _is_slow(BY_ID[case["run_after"]]):
        return True
    may_time_out = "error:timeout" in [case["expect"], *case.get("accept", [])]
    return may_time_out or case["id"] in KNOWN_FAILING or case["id"] in KNOWN_FLAKY


#: how many slow cases are judged at once: they spend their time waiting for their
#: deadline (a wall-clock limit), whatever the number of cores
BATCH_THREADS = 16
_batch_lock = threading.Lock()
_verdicts: dict[tuple[str, str], BaseException | None] = {}


def _slow_jobs() -> list[tuple[str, dict[str, Any]]]:
    """Every (mode, case) of this file whose judging takes the whole time limit."""
    jobs = [("run", c) for c in CASES]
    jobs += [(how, BY_ID[i]) for how in ("deep", "arun") for i in ALSO_DEEP_AND_ASYNC]
    jobs += [("session", c) for c in SESSION_CASES]
    return [(mode, c) for mode, c in jobs if _is_slow(c)]


def _slow_verdict(mode: str, case: dict[str, Any]) -> None:
    """Judge every slow (mode, case) at once on BATCH_THREADS threads (the first time one
    is asked for), then raise what judging `case` in `mode` raised, if anything."""
    with _batch_lock:
        if not _verdicts:

            def verdict(job: tuple[str, dict[str, Any]]) -> BaseException | None:
                mode, c = job
                try:
                    if mode == "session":
                        judge_in_session(c)
                    else:
                        judge(c, mode, check_memory=False)  # other cases run meanwhile
                except BaseException as exc:  # noqa: BLE001 - re-raised by its own test
                    return exc
                return None

            jobs = _slow_jobs()
            with cf.ThreadPoolExecutor(BATCH_THREADS) as threads:
                results = threads.map(verdict, jobs)
                _verdicts.update(zip(((m, c["id"]) for m, c in jobs), results, strict=True))
    exc = _verdicts[(mode, case["id"])]
    if exc is not None:
        raise exc


def _plant_canary_file() -> None:
    """Write the canary file atomically: other test processes on the machine plant the
    same file, and must never read it half written."""
    tmp = CANARY_FILE.with_name(f"{CANARY_FILE.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(CANARY_FILE_TEXT)
    os.replace(tmp, CANARY_FILE)


@pytest.fixture(autouse=True)
def canaries(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SANDBOX_CANARY_ENV", CANARY_ENV)
    _plant_canary_file()
    PWNED.unlink(missing_ok=True)
    yield
    assert not PWNED.exists()
    assert CANARY_FILE.read_text() == CANARY_FILE_TEXT


def _param(case: dict[str, Any], *, session: bool = False) -> Any:
    marks = []
    if case["id"] in KNOWN_FAILING:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[case["id"]]))
    elif session and case["id"] in KNOWN_FAILING_IN_SESSION:
        reason = KNOWN_FAILING_IN_SESSION[case["id"]]
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    if case["id"] in KNOWN_FLAKY:
        marks.append(pytest.mark.xfail(strict=False, reason=KNOWN_FLAKY[case["id"]]))
    return pytest.param(case, id=case["id"], marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_hostile_case(case: dict[str, Any]) -> None:
    if _is_slow(case):
        _slow_verdict("run", case)
    else:
        judge(case)


@pytest.mark.parametrize("how", ["deep", "arun"])
@pytest.mark.parametrize("case", [_param(BY_ID[i]) for i in ALSO_DEEP_AND_ASYNC])
def test_hostile_case_deep_and_async(case: dict[str, Any], how: str) -> None:
    if _is_slow(case):
        _slow_verdict(how, case)
    else:
        judge(case, how)


@pytest.mark.parametrize("case", [_param(c, session=True) for c in SESSION_CASES])
def test_hostile_case_in_session(case: dict[str, Any]) -> None:
    if _is_slow(case):
        _slow_verdict("session", case)
    else:
        judge_in_session(case)


def test_no_binding_runs_after_a_swallowed_deadline() -> None:
    """The deterministic form of loop-prepare-stack-trace-then-tool-call: once `add` is
    known to be fast it runs inline, so a call the script makes after the deadline (which
    the engine let it survive) reaches the function before the run is stopped."""
    calls = Calls()
    sb = Sandbox(limits=Limits(timeout_s=0.5), bindings=make_bindings(calls))
    code = (
        "await tools.add({ a: 1, b: 1 });\n"
        "Error.prepareStackTrace = () => { for (;;) {} };\n"
        "new Error('x');  // returns after the deadline: the interrupt was swallowed\n"
        "await tools.add({ a: 2, b: 2 });"
    )
    res = _run_with_watchdog(sb, code)
    assert res.error is not None and res.error.kind == "timeout", res
    assert calls.ran == {"add": 1}, "a binding ran after the run's deadline"


def test_session_next_run_runs_after_map_prototype_is_broken() -> None:
    """A run that breaks Map.prototype.clear must not brick its session: the next run's own
    code still runs (here: it repairs the prototype and returns a value)."""
    sb = Sandbox(limits=Limits(timeout_s=1))
    with sb.session() as s:
        broken = "Map.prototype.clear = function () { throw new Error('broken'); }; 'set'"
        assert _run_with_watchdog(s, broken).value == "set"
        res = _run_with_watchdog(s, "delete Map.prototype.clear; 'repaired'")
        assert res.value == "repaired", res.error


def test_sample_is_the_one_we_expect() -> None:
    assert len(SAMPLE) >= 60
    assert {c["category"] for c in SAMPLE} >= {
        "infinite_loop",
        "memory_bomb",
        "stack_exhaustion",
        "output_flood",
        "syntax_unicode",
        "host_escape",
        "binding_abuse",
        "result_marshalling",
        "benign_control",
    }


def test_extra_cases_are_well_formed() -> None:
    outcomes = {"ok", *KIND_TO_OUTCOME.values()}
    assert len(EXTRA) >= 150
    assert len(BY_ID) == len(CASES), "case ids must be unique across sample.json and extra.json"
    assert {c["category"] for c in EXTRA} == {c["category"] for c in SAMPLE}
    for c in EXTRA:
        assert {"id", "category", "description", "code", "bindings_needed", "expect"} <= c.keys()
        assert c["expect"] in outcomes and set(c.get("accept", [])) <= outcomes, c["id"]
        assert "secret_admin" not in c["bindings_needed"], c["id"]
        assert c.get("run_after") is None or c["run_after"] in BY_ID, c["id"]
    assert set(KNOWN_FAILING) | set(KNOWN_FLAKY) <= {c["id"] for c in EXTRA}
    assert set(KNOWN_FAILING_IN_SESSION) <= {c["id"] for c in SESSION_CASES}
    assert set(ALSO_DEEP_AND_ASYNC) <= {c["id"] for c in EXTRA}
