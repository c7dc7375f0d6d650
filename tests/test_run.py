"""Running scripts: values, logs, top-level await, isolation between runs."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stderr, redirect_stdout

from clambot_tools import Sandbox


def test_value_is_last_expression(sandbox: Sandbox) -> None:
    res = sandbox.run("const xs = [1, 2, 3];\nxs.map(x => x * 2)")
    assert res.ok and res.error is None
    assert res.value == [2, 4, 6]


def test_top_level_await(sandbox: Sandbox) -> None:
    res = sandbox.run("const v = await Promise.resolve(20);\nawait new Promise(r => r(v + 1))")
    assert res.value == 21


def test_console_goes_to_logs_with_levels_not_stdout(sandbox: Sandbox) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        res = sandbox.run(
            "console.log('a', 1, {b: 2}); console.info('i'); console.warn('w');"
            "console.error(new TypeError('e')); console.debug([1]); 'value'"
        )
    assert res.value == "value"
    assert [(e.level, e.message.splitlines()[0]) for e in res.logs] == [
        ("log", 'a 1 {"b":2}'),
        ("info", "i"),
        ("warn", "w"),
        ("error", "TypeError: e"),
        ("debug", "[1]"),
    ]
    assert out.getvalue() == "" and err.getvalue() == ""


def test_each_run_starts_clean(sandbox: Sandbox) -> None:
    first = sandbox.run(
        "globalThis.leak = 1; var v = 2; Array.prototype.evil = () => 3;"
        "Object.prototype.polluted = true; JSON.parse = () => 'hacked'; 'set'"
    )
    assert first.value == "set"
    second = sandbox.run("[typeof leak, typeof v, typeof [].evil, ({}).polluted, JSON.parse('1')]")
    assert second.value == ["undefined", "undefined", "undefined", None, 1]


def test_set_timeout_runs_within_the_run(sandbox: Sandbox) -> None:
    res = sandbox.run(
        "const order = [];\n"
        "setTimeout(() => order.push('late'), 30);\n"
        "const id = setTimeout(() => order.push('never'), 10); clearTimeout(id);\n"
        "await new Promise(r => setTimeout(() => { order.push('soon'); r(); }, 5));\n"
        "await new Promise(r => setTimeout(r, 40));\n"
        "order"
    )
    assert res.value == ["soon", "late"]


def test_math_random_differs_between_runs(sandbox: Sandbox) -> None:
    a = sandbox.run("Math.random()").value
    b = sandbox.run("Math.random()").value
    assert isinstance(a, float) and a != b


def test_only_standard_globals_exist(sandbox: Sandbox) -> None:
    res = sandbox.run(
        "['require','process','module','fetch','WebAssembly','std','os','Deno','print','scriptArgs']"
        ".filter(n => typeof globalThis[n] !== 'undefined')"
    )
    assert res.value == []


def test_arun_matches_run(sandbox: Sandbox) -> None:
    res = asyncio.run(sandbox.arun("await Promise.all([1, 2].map(async x => x * 10))"))
    assert res.ok and res.value == [10, 20]


def test_stats_are_filled(sandbox: Sandbox) -> None:
    res = sandbox.run("new Array(1000).fill('x').join('')")
    assert res.stats.duration_ms > 0
    assert res.stats.memory_bytes is not None and res.stats.memory_bytes > 0


def test_non_string_code_is_a_config_error(sandbox: Sandbox) -> None:
    import pytest

    from clambot_tools import ConfigError

    with pytest.raises(ConfigError):
        sandbox.run(b"1+1")  # type: ignore[arg-type]
