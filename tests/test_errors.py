"""Errors carry kind, name, message and the line/column of the user's own script."""

from __future__ import annotations

import pytest

from clambot_tools import Sandbox


def test_runtime_error_points_at_the_users_line(sandbox: Sandbox) -> None:
    res = sandbox.run("const a = 1;\nconst b = 2;\nnull.boom;\n")
    assert not res.ok and res.error is not None
    assert res.error.kind == "runtime"
    assert res.error.name == "TypeError"
    assert res.error.line == 3
    assert res.error.column is not None
    assert res.error.stack is not None and "script.js:3" in res.error.stack


def test_error_in_nested_function_reports_its_line(sandbox: Sandbox) -> None:
    res = sandbox.run("function inner() {\n  throw new RangeError('deep');\n}\ninner();")
    assert res.error is not None
    assert (res.error.name, res.error.message, res.error.line) == ("RangeError", "deep", 2)


def test_syntax_error_has_kind_syntax_and_line(sandbox: Sandbox) -> None:
    res = sandbox.run("let ok = 1;\nlet x: number = 5;\n")
    assert res.error is not None
    assert res.error.kind == "syntax" and res.error.name == "SyntaxError"
    assert res.error.line == 2


def test_eval_syntax_error_at_run_time_is_runtime(sandbox: Sandbox) -> None:
    res = sandbox.run("eval('function (')")
    assert res.error is not None and res.error.kind == "runtime"
    assert res.error.name == "SyntaxError"


def test_rejected_top_level_await(sandbox: Sandbox) -> None:
    res = sandbox.run("await Promise.reject(new Error('nope'))")
    assert res.error is not None
    assert (res.error.kind, res.error.message) == ("runtime", "nope")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("throw null", "null"),
        ("throw undefined", "undefined"),
        ("throw 42", "42"),
        ("throw Symbol('sym')", "Symbol(sym)"),
        ("throw {toString() { throw new Error('x') }}", "failing toString"),
        ("throw {toString() { return 'custom' }}", "custom"),
    ],
)
def test_odd_throws_are_well_formed(sandbox: Sandbox, code: str, text: str) -> None:
    res = sandbox.run(code)
    assert res.error is not None and res.error.kind == "runtime"
    assert res.error.name == "NonErrorThrown"
    assert text in res.error.message


def test_error_with_throwing_getters(sandbox: Sandbox) -> None:
    res = sandbox.run(
        "const e = new Error('m');\n"
        "Object.defineProperty(e, 'message', { get() { throw new Error('trap') } });\n"
        "Object.defineProperty(e, 'name', { get() { for (;;) {} } });\n"
        "throw e"
    )
    assert res.error is not None
    assert res.error.kind in ("runtime", "timeout")


def test_huge_error_message_is_cut(sandbox: Sandbox) -> None:
    res = sandbox.run("throw new Error('m'.repeat(4 * 1024 * 1024))")
    assert res.error is not None and res.error.kind == "runtime"
    assert len(res.error.message) < 10_000
    assert "more bytes" in res.error.message


def test_never_settling_await_is_reported_not_hung(sandbox: Sandbox) -> None:
    res = sandbox.run("await new Promise(() => {})")
    assert res.error is not None and res.error.kind == "runtime"
    assert "nothing can settle" in res.error.message


def test_import_statements_are_syntax_errors_and_dynamic_import_fails(sandbox: Sandbox) -> None:
    res = sandbox.run("import * as std from 'std';\nstd.loadFile('/etc/passwd')")
    assert res.error is not None and res.error.kind == "syntax"
    res = sandbox.run("const os = await import('os');\nos.exec(['id'])")
    assert res.error is not None and res.error.kind == "runtime"


def test_columns_count_characters_not_bytes(sandbox: Sandbox) -> None:
    ascii_col = sandbox.run("const a = 'ab'; null.x").error
    accented = sandbox.run("const a = 'éé'; null.x").error
    assert ascii_col is not None and accented is not None
    assert accented.column == ascii_col.column  # same number of characters before it


def test_core_import_never_pulls_in_agent_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, clambot_tools; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'langgraph', 'llama_index', 'IPython')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
