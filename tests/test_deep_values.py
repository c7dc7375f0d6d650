"""Nothing a script does raises in the host, at any nesting depth, in any entry point,
even under a caller that is already deep in its own stack (issue 11.6)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from clambot_tools import AuditLog, Policy, Sandbox, binding

DEPTHS = [990, 1000, 5000]


def _nest(depth: int) -> str:
    return f"let v = 0; for (let i = 0; i < {depth}; i++) v = [v]; v"


def _depth(value: Any) -> int:
    n = 0
    while isinstance(value, list):
        value, n = value[0], n + 1
    return n


def _deep(frames: int, fn: Callable[[], Any]) -> Any:
    """Call `fn` from `frames` frames down."""
    if frames == 0:
        return fn()
    return _deep(frames - 1, fn)


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_deep_result_never_raises_from_run_session_or_arun(depth: int) -> None:
    sb = Sandbox()
    code = _nest(depth)
    outcomes = [_deep(200, lambda: sb.run(code))]
    with sb.session() as s:
        outcomes.append(_deep(200, lambda: s.run(code)))
    outcomes.append(_deep(200, lambda: asyncio.run(sb.arun(code))))
    for res in outcomes:
        if res.ok:
            assert _depth(res.value) == depth
        else:  # past the guest's own nesting cap: a clean error naming the limit
            assert res.error is not None and res.error.kind == "runtime", res.error
            assert "nesting deeper" in res.error.message
    assert outcomes[0].ok == (depth <= 1000)


def test_deep_binding_results_and_arguments_never_raise() -> None:
    records: list[dict[str, Any]] = []

    def deep_result(depth: int) -> Any:
        v: Any = 0
        for _ in range(depth):
            v = [v]
        return v

    def echo(value: Any) -> Any:
        return value

    sb = Sandbox(bindings=[deep_result, echo], audit=AuditLog(records.append))
    res = _deep(200, lambda: sb.run("const v = await tools.deep_result({depth: 900}); 1"))
    assert res.ok, res.error
    res = _deep(200, lambda: sb.run("(await tools.deep_result({depth: 5000})).length"))
    assert res.value == 1, res.error  # thousands of levels cross
    res = _deep(200, lambda: sb.run("await tools.deep_result({depth: 100000})"))
    assert res.error is not None and res.error.kind == "binding_failed", res.error
    res = _deep(
        200,
        lambda: sb.run(
            "let v = 0; for (let i = 0; i < 3000; i++) v = [v];\n"
            "try { await tools.echo({value: v}); 'passed' } catch (e) { e.name }"
        ),
    )
    assert res.ok, res.error  # the script could catch it: not an uncatchable internal error
    runs = [r for r in records if r["event"] == "run"]
    assert len(runs) == 4  # every run audited, none lost to an exception


def test_a_side_effect_before_a_deep_result_is_audited() -> None:
    records: list[dict[str, Any]] = []
    done: list[str] = []

    @binding(effects=("write",))
    def save(text: str) -> str:
        done.append(text)
        return "saved"

    sb = Sandbox(
        bindings=[save],
        audit=AuditLog(records.append),
        policy=Policy(auto_approve=("write",)),
    )
    res = _deep(200, lambda: sb.run("await tools.save({text: 'x'});\n" + _nest(995)))
    assert res.ok and done == ["x"]
    assert [r["event"] for r in records] == ["call", "run"]
