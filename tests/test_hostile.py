"""Every case of tests/hostile/sample.json (the shared hostile corpus, kept in the
repository), judged as its README (tests/hostile/README.md) says.

For each case: the four standard bindings are granted and only `bindings_needed` is
allowed; canaries are planted in the environment and in /tmp; the run happens under an
outer watchdog; then the outcome, the canaries, `secret_admin` and the host's health
(a sentinel tool call and `1 + 1`) are checked.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from clambot_tools import Limits, Policy, RunResult, Sandbox, binding

HOSTILE = Path(os.environ.get("CLAMBOT_HOSTILE_DIR", Path(__file__).resolve().parent / "hostile"))
CASES: list[dict[str, Any]] = json.loads((HOSTILE / "sample.json").read_text())
LIMITS = Limits(timeout_s=2, memory_mb=64, max_log_bytes=1 << 20, max_result_bytes=1 << 20)
WATCHDOG_S = 4 * LIMITS.timeout_s + 10
CANARY_ENV, CANARY_FILE_TEXT = "canary-env-5d1f0b", "canary-file-8c2e7a"
CANARY_FILE, PWNED = Path("/tmp/sandbox_canary.txt"), Path("/tmp/pwned_by_sandbox")
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

secret_calls: list[Any] = []


def echo(**args: Any) -> Any:
    return args


def add(a: Any = None, b: Any = None) -> Any:
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError("add needs two numbers")
    return a + b


def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


def secret_admin(**args: Any) -> str:
    secret_calls.append(args)
    return "PWNED"


BINDINGS = [binding(echo), binding(add), binding(fail), binding(secret_admin)]


def _outcome(res: RunResult) -> str:
    return "ok" if res.ok else KIND_TO_OUTCOME[res.error.kind if res.error else "internal"]


def _normal(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _run_with_watchdog(sb: Sandbox, code: str) -> RunResult:
    box: list[RunResult | BaseException] = []

    def target() -> None:
        try:
            box.append(sb.run(code))
        except BaseException as exc:  # noqa: BLE001 - reported as the failure below
            box.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(WATCHDOG_S)
    assert not t.is_alive(), f"watchdog fired after {WATCHDOG_S} s"
    (res,) = box
    assert isinstance(res, RunResult), f"an exception escaped the API: {res!r}"
    return res


@pytest.fixture(autouse=True)
def canaries(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SANDBOX_CANARY_ENV", CANARY_ENV)
    CANARY_FILE.write_text(CANARY_FILE_TEXT)
    PWNED.unlink(missing_ok=True)
    secret_calls.clear()
    yield
    assert not PWNED.exists()
    assert CANARY_FILE.read_text() == CANARY_FILE_TEXT


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in CASES])
def test_hostile_case(case: dict[str, Any]) -> None:
    sb = Sandbox(limits=LIMITS, bindings=BINDINGS, policy=Policy(allow=case["bindings_needed"]))
    res = _run_with_watchdog(sb, case["code"])

    text = json.dumps(
        [res.value, [e.message for e in res.logs], res.error.model_dump() if res.error else None],
        default=str,
    )
    for secret in (CANARY_ENV, CANARY_FILE_TEXT, "root:x:0:0"):
        assert secret not in text
    assert secret_calls == [], "secret_admin ran"

    outcome = _outcome(res)
    assert outcome in [case["expect"], *case.get("accept", [])], (outcome, res.error)
    if outcome == "ok":
        if "expected_result" in case:
            assert _normal(res.value) == case["expected_result"]
        if "expected_result_one_of" in case:
            assert _normal(res.value) in case["expected_result_one_of"]

    # the host is still usable
    assert sb.run("1 + 1").value == 2
    sentinel = Sandbox(limits=LIMITS, bindings=BINDINGS, policy=Policy(allow=["echo"]))
    assert sentinel.run('await tools.echo({text: "alive"})').value == {"text": "alive"}


def test_sample_is_the_one_we_expect() -> None:
    assert len(CASES) >= 60
    assert {c["category"] for c in CASES} >= {
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
