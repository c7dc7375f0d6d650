"""The %%js_sandbox cell magic, run for real in an IPython InteractiveShell."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

IPython = pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell  # noqa: E402
from IPython.utils.capture import CapturedIO, capture_output  # noqa: E402
from traitlets.config import Config  # noqa: E402

import clambot_tools  # noqa: E402
from clambot_tools import Policy, RunResult, Sandbox, binding  # noqa: E402
from clambot_tools._magic import (  # noqa: E402
    MagicArgumentError,
    ShownRunResult,
    load_ipython_extension,
    parse_line,
)


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """IPython's shell, kept out of ~/.ipython (its own dir, no history database)."""
    old_dir = os.environ.get("IPYTHONDIR")
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    config = Config()
    config.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=config)
    load_ipython_extension(sh)
    yield sh
    if old_dir is None:
        os.environ.pop("IPYTHONDIR", None)
    else:
        os.environ["IPYTHONDIR"] = old_dir


@pytest.fixture
def ns(shell: InteractiveShell) -> Iterator[dict[str, Any]]:
    """The shell's user namespace; the names a test adds are removed after it."""
    before = set(shell.user_ns)
    yield shell.user_ns
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]


def run(shell: InteractiveShell, line: str, cell: str) -> tuple[ExecutionResult, CapturedIO]:
    with capture_output() as cap:
        # IPython is untyped
        res = shell.run_cell(f"%%js_sandbox {line}\n{cell}", store_history=False)  # type: ignore[no-untyped-call]
    return res, cap


def shown(cap: CapturedIO, mime: str = "text/html") -> str:
    assert len(cap.outputs) == 1, cap.outputs
    out: str = cap.outputs[0].data[mime]
    return out


def usage_error(res: ExecutionResult) -> str:
    assert isinstance(res.error_in_exec, UsageError), res.error_in_exec
    return str(res.error_in_exec)


def test_cell_runs_and_its_result_is_displayed(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    res, cap = run(shell, "", "console.warn('careful');\n[1, 2, 3].map(x => x * 2)")
    assert res.success
    html = shown(cap)
    assert "careful" in html and "[warn]" in html and "ok" in html
    md = shown(cap, "text/markdown")
    assert "[\n  2,\n  4,\n  6\n]" in md
    assert "ok ·" in shown(cap, "text/plain")


def test_var_stores_the_run_result(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    res, _ = run(shell, "--var out", "({answer: 6 * 7})")
    assert res.success
    out = ns["out"]
    assert isinstance(out, RunResult) and out.ok and out.value == {"answer": 42}


def test_error_shows_the_failing_line_of_the_cell(
    shell: InteractiveShell, ns: dict[str, Any]
) -> None:
    res, cap = run(shell, "--var r", "const a = 1;\nconst b = a +;\n")
    assert res.success  # a failing script is a result, not an exception of the cell
    assert ns["r"].error.kind == "syntax"
    text = shown(cap, "text/plain")
    assert "> 2 | const b = a +;\n    |              ^" in text
    assert "&gt; 2 | const b = a +;" in shown(cap)


def test_bindings_are_looked_up_by_name(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    ns["double"] = lambda x: x * 2  # a plain callable: granted under the variable's name

    @binding(name="weather", description="Weather of a city")
    async def get_weather(city: str) -> dict[str, Any]:
        return {"city": city, "temp_c": 18.5}

    ns["w"] = get_weather  # a binding keeps its own name
    ns["more"] = [binding(lambda: "pong", name="ping")]  # a list of bindings
    code = (
        "const d = await tools.double({x: 21});\n"
        "const w = await tools.weather({city: 'Paris'});\n"
        "[d, w.temp_c, await tools.ping(), Object.keys(tools).filter((k) => k[0] !== '$').sort()]"
    )
    res, _ = run(shell, "--bindings double, w,more --var r", code)
    assert res.success
    assert ns["r"].value == [42, 18.5, "pong", ["double", "ping", "weather"]]


def test_no_bindings_means_no_tools(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    ns["secret"] = lambda: "s3cret"
    run(shell, "--var r", "await tools.secret()")
    assert ns["r"].error.name == "TypeError"  # tools.secret is undefined


def test_timeout_and_memory_options_apply(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    run(shell, "--timeout 0.2 --var r", "let i = 0;\nwhile (true) { i++ }")
    assert ns["r"].error.kind == "timeout" and "0.2 s" in ns["r"].error.message
    run(shell, "--memory 8 --var r", "const a = [];\nwhile (true) a.push(new Array(1e5).fill(1));")
    assert ns["r"].error.kind == "memory" and "8 MiB" in ns["r"].error.message


def test_sandbox_option_uses_the_notebooks_sandbox(
    shell: InteractiveShell, ns: dict[str, Any]
) -> None:
    @binding(effects=("write",))
    def delete_everything() -> str:
        raise AssertionError("must not be called")

    ns["sb"] = Sandbox(bindings=[delete_everything], policy=Policy(deny_effects=["write"]))
    res, cap = run(shell, "--sandbox sb --var r", "await tools.delete_everything()")
    assert res.success
    assert ns["r"].error.kind == "binding_denied"
    assert "binding_denied" in shown(cap)


def test_sandbox_option_takes_a_session_whose_globals_persist(
    shell: InteractiveShell, ns: dict[str, Any]
) -> None:
    ns["repl"] = Sandbox().session()
    run(shell, "--sandbox repl", "let counter = 40;\nfunction bump(n) { return counter += n; }")
    run(shell, "--sandbox repl --var r", "bump(2)")
    assert ns["r"].value == 42
    ns["repl"].close()
    res, _ = run(shell, "--sandbox repl", "counter")
    assert "closed" in usage_error(res)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bindings nowhere", "no variable named 'nowhere'"),
        ("--bindings not_callable", "is a int, not a callable"),
        ("--bindings 'a b'", "wants a variable name"),
        ("--var 1x", "wants a variable name"),
        ("--timeout abc", "invalid float value"),
        ("--timeout 0", "Limits.timeout_s must be between"),
        ("--memory 1", "Limits.memory_mb must be between"),
        ("--frobnicate", "unrecognized arguments"),
        ("--sandbox not_callable", "not a clambot_tools.Sandbox or Session"),
        ("--sandbox x --timeout 1", "cannot be combined"),
        ("--bindings dup,dup", "share the name"),
        ("'unclosed", "No closing quotation"),
    ],
)
def test_a_bad_line_is_a_usage_error(
    shell: InteractiveShell, ns: dict[str, Any], line: str, message: str
) -> None:
    ns["not_callable"] = 5
    ns["dup"] = lambda: 1
    res, cap = run(shell, f"--var r {line}", "1")
    assert message in usage_error(res)
    assert "r" not in ns and not cap.outputs


def test_magic_help_shows_its_options(shell: InteractiveShell) -> None:
    doc = shell.find_cell_magic("js_sandbox").__doc__  # type: ignore[no-untyped-call]
    assert doc is not None
    for opt in ("--timeout S", "--memory MB", "--bindings NAME1,NAME2", "--var NAME"):
        assert opt in doc


def test_parse_line() -> None:
    args = parse_line("--timeout 1.5 --memory 32 --bindings a,b --var out")
    assert (args.timeout, args.memory, args.bindings, args.var) == (1.5, 32, ("a", "b"), "out")
    assert parse_line("").bindings == ()
    assert parse_line("--bindings a, b --bindings c").bindings == ("a", "b", "c")
    with pytest.raises(MagicArgumentError):
        parse_line("--help")


def test_shown_run_result_renders_with_its_code() -> None:
    code = "1;\nnull.x"
    shown_res = ShownRunResult(Sandbox().run(code), code)
    assert "> 2 | null.x" in repr(shown_res)
    assert "&gt; 2 | null.x" in shown_res._repr_html_()
    assert "> 2 | null.x" in shown_res._repr_markdown_()


@pytest.mark.skipif(
    not hasattr(clambot_tools, "load_ipython_extension"),
    reason="clambot_tools.load_ipython_extension not wired yet",
)
def test_load_ext_registers_the_magic(shell: InteractiveShell, ns: dict[str, Any]) -> None:
    shell.run_line_magic("load_ext", "clambot_tools")
    assert shell.find_cell_magic("js_sandbox") is not None  # type: ignore[no-untyped-call]
    res, _ = run(shell, "--var r", "6 * 7")
    assert res.success and ns["r"].value == 42


def test_core_does_not_import_ipython() -> None:
    code = (
        "import sys, clambot_tools, clambot_tools._display, clambot_tools._magic\n"
        "assert 'IPython' not in sys.modules, 'IPython imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
