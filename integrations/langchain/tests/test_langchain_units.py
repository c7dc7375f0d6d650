"""Unit tests of SandboxedJSTool: fences, the compact text, errors, the async path,
LangChain tools as bindings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from clambot_tools import ConfigError, Limits, Policy, RunResult, render
from langchain_core.documents import Document
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool, ToolException, tool
from pydantic import BaseModel

from langchain_clambot import (
    SandboxedJSInput,
    SandboxedJSTool,
    SandboxToolError,
    strip_code_fences,
)


@pytest.fixture(scope="module")
def js() -> SandboxedJSTool:
    return SandboxedJSTool(limits=Limits(timeout_s=2))


def call(tool: SandboxedJSTool, code: str) -> ToolMessage:
    msg = tool.invoke({"type": "tool_call", "id": "1", "name": tool.name, "args": {"code": code}})
    assert isinstance(msg, ToolMessage)
    return msg


# -- fences (the rules themselves are tested in the core's tests/test_render.py)


def test_strip_code_fences_is_the_cores() -> None:
    assert strip_code_fences is render.strip_code_fences


def test_fenced_error_lines_are_those_of_the_fenced_script(js: SandboxedJSTool) -> None:
    msg = call(js, "```js\r\n\r\nconst a = 1;\r\na.b.c\r\n```")
    assert msg.status == "error"
    assert "At line 3, column" in str(msg.content)
    assert "> 3 | a.b.c" in str(msg.content)
    result = js.invoke({"code": "```js\n6 * 7\n```"})
    assert result == "Result (JSON): 42"


# -- the compact text


def test_success_text_and_artifact(js: SandboxedJSTool) -> None:
    msg = call(js, "console.log('hi', 1); console.warn('careful'); ({a: [1, 'x'], b: null})")
    assert msg.status == "success"
    assert msg.content == (
        'Result (JSON): {"a":[1,"x"],"b":null}\nConsole output:\nhi 1\n[warn] careful'
    )
    assert isinstance(msg.artifact, RunResult)
    assert msg.artifact.value == {"a": [1, "x"], "b": None}


def test_undefined_result_says_how_results_work(js: SandboxedJSTool) -> None:
    text = js.invoke({"code": "const x = 1;"})
    assert text.startswith("Result: null")
    assert "last expression" in text


def test_non_finite_values(js: SandboxedJSTool) -> None:
    assert js.invoke({"code": "-1/0"}) == "Result (JSON): -Infinity"
    text = js.invoke({"code": "[NaN, 1/0]"})
    assert text.startswith("Result (JSON): [NaN,Infinity]\nHint: The result holds NaN at $[0]")


def test_value_and_logs_are_capped_with_a_marker() -> None:
    tool_ = SandboxedJSTool(max_value_chars=100, max_log_chars=100)
    msg = call(tool_, "for (let i = 0; i < 100; i++) console.log('line ' + i); 'x'.repeat(5000)")
    text = str(msg.content)
    assert len(text) < 350
    assert "[… 4,9" in text and "of 5,002 characters cut …]" in text
    assert "line 99" in text and "characters cut" in text.split("Console output:")[1]
    assert isinstance(msg.artifact, RunResult) and len(msg.artifact.value) == 5000


# -- errors


def test_syntax_error_text(js: SandboxedJSTool) -> None:
    msg = call(js, "const a = 1;\nfoo(a));\nconst secret_tail = 3;")
    assert msg.status == "error"
    text = str(msg.content)
    assert text.splitlines() == [
        "Error (syntax): SyntaxError: expecting ';'",
        "At line 2, column 7 of the script:",
        "  1 | const a = 1;",
        "> 2 | foo(a));",
        "    |       ^",
        "Hint: Fix the syntax at the marked position, then send the whole script again.",
    ]
    assert "secret_tail" not in text  # the rest of the script is never echoed


def test_runtime_error_in_a_function_has_a_call_stack(js: SandboxedJSTool) -> None:
    text = str(call(js, "function f() {\n  throw new RangeError('bad n')\n}\n\nf()").content)
    assert text.startswith("Error (runtime): RangeError: bad n\nAt line 2, column")
    assert "Call stack: f (line 2:" in text and "<- line 5:1" in text


def test_the_error_keeps_logs_written_before_it(js: SandboxedJSTool) -> None:
    text = str(call(js, "console.log('step 1');\nnull.x").content)
    assert "Console output before the error:\nstep 1" in text


def test_timeout_has_no_misleading_frame() -> None:
    tool_ = SandboxedJSTool(limits=Limits(timeout_s=0.2))
    text = str(call(tool_, "let i = 0\nwhile (true) { i++ }").content)
    assert text.startswith("Error (timeout): TimeoutError:")
    assert "0.2 s" in text and "At line" not in text


def test_huge_error_messages_are_capped(js: SandboxedJSTool) -> None:
    text = str(call(js, "throw new Error('x'.repeat(100000))").content)
    assert len(text) < 2000 and "characters cut …]" in text


def test_raises_sandbox_tool_error_without_handling() -> None:
    tool_ = SandboxedJSTool(handle_tool_error=False)
    with pytest.raises(SandboxToolError) as info:
        tool_.invoke({"code": "null.x"})
    assert isinstance(info.value, ToolException)
    assert info.value.result is not None and info.value.result.error is not None
    assert info.value.result.error.kind == "runtime"
    assert info.value.content.startswith("Error (runtime): TypeError")


def test_an_internal_failure_is_still_a_tool_error(
    monkeypatch: pytest.MonkeyPatch, js: SandboxedJSTool
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(SandboxedJSTool, "_sandbox", broken)
    msg = call(js, "1")
    assert msg.status == "error"
    assert msg.content == "Error (internal): the sandbox could not run the script: engine on fire"


# -- async path


async def test_async_invoke(js: SandboxedJSTool) -> None:
    assert await js.ainvoke({"code": "await Promise.resolve(5)"}) == "Result (JSON): 5"
    msg = await js.ainvoke(
        {
            "type": "tool_call",
            "id": "9",
            "name": js.name,
            "args": {"code": "```js\nlet x = 1\nx.y.z\n```"},
        }
    )
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "> 2 | x.y.z" in str(msg.content)


async def test_async_tools_run_on_the_callers_loop() -> None:
    import asyncio

    loops: list[Any] = []

    @tool
    async def where() -> str:
        """Which loop runs me."""
        loops.append(asyncio.get_running_loop())
        return "here"

    tool_ = SandboxedJSTool(tools=[where])
    assert await tool_.ainvoke({"code": "await tools.where({})"}) == 'Result (JSON): "here"'
    assert loops == [asyncio.get_running_loop()]


# -- LangChain tools as bindings


class Point(BaseModel):
    x: int
    y: int = 0


@tool
def norm1(p: Point, scale: float = 1.0) -> float:
    """Manhattan norm of a point, scaled."""
    return (abs(p.x) + abs(p.y)) * scale


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise ToolException(f"cannot do it: {reason}")


@tool
def gentle(reason: str) -> str:
    """Fails, with LangChain's error handling on."""
    raise ToolException(f"handled: {reason}")


gentle.handle_tool_error = True


async def _only_async(n: int) -> int:
    return n * 2


double = StructuredTool.from_function(
    coroutine=_only_async, name="double", description="Double a number (async only)."
)

lookup = StructuredTool(
    name="lookup-json",
    description="A tool with a JSON-schema dict as its args schema.",
    args_schema={"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    func=lambda **kw: {"got": kw},
)


@pytest.fixture(scope="module")
def granted() -> SandboxedJSTool:
    return SandboxedJSTool(tools=[norm1, explode, gentle, double, lookup])


def test_tools_keep_name_description_and_schema(granted: SandboxedJSTool) -> None:
    decl = granted.describe_tools()
    assert "/** Manhattan norm of a point, scaled. */" in decl
    assert "norm1(args: {" in decl and "x: number;" in decl and "Promise<number>" in decl
    assert '"lookup-json"(args: { key: string }): Promise<unknown>;' in decl
    assert decl in granted.description
    desc = granted.description
    assert "JavaScript" in desc and "not Python, not TypeScript" in desc
    assert granted.name == "run_js_sandboxed"
    assert granted.args_schema is SandboxedJSInput
    assert "JavaScript" in str(SandboxedJSInput.model_json_schema())


def test_nested_models_and_defaults(granted: SandboxedJSTool) -> None:
    out = granted.invoke({"code": "await tools.norm1({p: {x: -3, y: 4}, scale: 2})"})
    assert out == "Result (JSON): 14"  # a JS number


def test_tool_exceptions_are_catchable_js_errors(granted: SandboxedJSTool) -> None:
    code = (
        "const out = [];\n"
        "for (const t of ['explode', 'gentle']) {\n"
        "  try { await tools[t]({reason: 'r'}) } catch (e) { out.push(e.message) }\n"
        "}\nout"
    )
    assert json.loads(granted.invoke({"code": code}).removeprefix("Result (JSON): ")) == [
        "cannot do it: r",
        "handled: r",
    ]


def test_uncaught_tool_exception_is_reported(granted: SandboxedJSTool) -> None:
    msg = call(granted, "await tools.explode({reason: 'no'})")
    assert msg.status == "error"
    assert str(msg.content).startswith(
        'Error (binding_failed): Error: tools.explode({"reason":"no"}) failed: cannot do it: no'
    )


def test_invalid_arguments_name_the_field(granted: SandboxedJSTool) -> None:
    code = "try { await tools.norm1({p: {y: 1}}) } catch (e) { e.message }"
    text = granted.invoke({"code": code})
    assert "invalid arguments for tools.norm1: p.x: Field required" in text


def test_async_only_tool_from_sync_invoke(granted: SandboxedJSTool) -> None:
    assert granted.invoke({"code": "await tools.double({n: 21})"}) == "Result (JSON): 42"


def test_dict_schema_tool(granted: SandboxedJSTool) -> None:
    out = granted.invoke({"code": "await tools['lookup-json']({key: 'k'})"})
    assert out == 'Result (JSON): {"got":{"key":"k"}}'


def test_policy_applies_to_langchain_tools() -> None:
    tool_ = SandboxedJSTool(
        tools=[norm1], effects={"norm1": ["network"]}, policy=Policy(deny_effects=["network"])
    )
    msg = call(tool_, "await tools.norm1({p: {x: 1}})")
    assert str(msg.content).startswith("Error (binding_denied)")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not granted"):
        SandboxedJSTool(tools=[norm1], effects={"norm_1": ["write"]})
    with pytest.raises(ConfigError, match="LangChain tools"):
        SandboxedJSTool(tools=[len])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="share the name"):
        SandboxedJSTool(tools=[norm1, norm1])


def test_tool_results_become_json_data() -> None:
    @tool
    def docs(q: str) -> list[Document]:
        """Search."""
        return [Document(page_content=q, metadata={"n": 1})]

    tool_ = SandboxedJSTool(tools=[docs])
    out = tool_.invoke({"code": "(await tools.docs({q: 'hi'}))[0].page_content"})
    assert out == 'Result (JSON): "hi"'


async def _slow_double(n: int) -> int:
    return n * 2


def _triple(n: int) -> int:
    return n * 3


@pytest.fixture(scope="module")
def plain() -> SandboxedJSTool:
    from clambot_tools import binding

    return SandboxedJSTool(bindings=[_slow_double, binding(_triple, name="triple")])


def test_plain_bindings_sync(plain: SandboxedJSTool) -> None:
    code = (
        "const [a, b] = await Promise.all([tools._slow_double({n: 2}), tools.triple({n: 2})]);"
        " a + b"
    )
    assert plain.invoke({"code": code}) == "Result (JSON): 10"
    assert "_slow_double(args: {" in plain.description


async def test_plain_bindings_async(plain: SandboxedJSTool) -> None:
    code = "(await tools._slow_double({n: 5})) + (await tools.triple({n: 1}))"
    assert await plain.ainvoke({"code": code}) == "Result (JSON): 13"
