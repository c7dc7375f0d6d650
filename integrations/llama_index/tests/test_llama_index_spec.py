"""ClamBotToolSpec and its tool: metadata, sync/async calls, fences, the text a run
becomes, and LlamaIndex tools granted as bindings."""

import asyncio
import json
import subprocess
import sys
import threading
from typing import Any

import pytest
from clambot_tools import ConfigError, Limits, Policy, RunResult, Sandbox, binding, render
from llama_index.core.schema import Document
from llama_index.core.tools import BaseTool, FunctionTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import AsyncBaseTool
from llama_index.core.workflow import Context
from pydantic import BaseModel

from llama_index.tools.clambot import (
    ClamBotTool,
    ClamBotToolSpec,
    RunJsSandboxedArgs,
    binding_from_tool,
    cap,
    format_run_result,
    strip_code_fences,
)


def the_tool(spec: ClamBotToolSpec) -> ClamBotTool:
    [tool] = spec.to_tool_list()
    assert isinstance(tool, ClamBotTool)
    return tool


class Weather(BaseModel):
    city: str
    temp_c: float


def get_weather(city: str) -> Weather:
    """Current weather for a city."""
    return Weather(city=city, temp_c=20.0)


@pytest.fixture(scope="module")
def weather_spec() -> ClamBotToolSpec:
    return ClamBotToolSpec([FunctionTool.from_defaults(get_weather)])


# -- the tool and its metadata


def test_to_tool_list_gives_one_function_tool_that_says_javascript(
    weather_spec: ClamBotToolSpec,
) -> None:
    tool = the_tool(weather_spec)
    assert isinstance(tool, FunctionTool)
    meta = tool.metadata
    assert meta.name == "run_js_sandboxed"
    assert meta.fn_schema is RunJsSandboxedArgs
    assert meta.get_parameters_dict()["required"] == ["code"]
    assert meta.description.startswith("Run a JavaScript program in a sandbox")
    assert "not Python, not TypeScript" in meta.description
    assert weather_spec.describe_tools() in meta.description
    # the granted tool, with its description (not its Python signature) and result type
    assert "/** Current weather for a city. */" in meta.description
    assert "get_weather(args: { city: string }): Promise<{ city: string; temp_c: number }>;" in (
        meta.description
    )
    assert "Limits: 5 s per run (tool calls included), 64 MiB." in meta.description
    assert len(meta.description) <= 1024
    meta.to_openai_tool()  # within OpenAI's limit: no ValueError


def test_description_follows_the_limits_and_says_when_nothing_is_granted() -> None:
    meta = the_tool(ClamBotToolSpec(limits=Limits(timeout_s=1.5, memory_mb=32))).metadata
    assert "No network, files or environment." in meta.description
    assert "declare const tools" not in meta.description
    assert "1.5 s per run (tool calls included), 32 MiB" in meta.description


def test_sync_call_returns_the_run_result_as_raw_output(weather_spec: ClamBotToolSpec) -> None:
    out = the_tool(weather_spec).call(
        code="const w = await tools.get_weather({city: 'Oslo'});\nconsole.log(w.city);\n"
        "w.temp_c * 9 / 5 + 32"
    )
    assert isinstance(out, ToolOutput) and out.is_error is False
    assert isinstance(out.raw_output, RunResult) and out.raw_output.value == 68
    assert out.content == "Result (JSON): 68\nConsole output:\nOslo"
    assert out.tool_name == "run_js_sandboxed"
    assert out.raw_input["kwargs"]["code"].startswith("const w")


def test_async_call_uses_arun_on_the_callers_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def where() -> str:
        """Record the loop this runs on."""
        loops.append(asyncio.get_running_loop())
        return "here"

    tool = the_tool(ClamBotToolSpec([FunctionTool.from_defaults(async_fn=where)]))

    async def main() -> tuple[ToolOutput, asyncio.AbstractEventLoop]:
        return await tool.acall(code="await tools.where()"), asyncio.get_running_loop()

    out, loop = asyncio.run(main())
    assert out.content == 'Result (JSON): "here"' and not out.is_error
    assert loops == [loop]
    # the sync call runs the same async tool on the sandbox's private loop instead
    assert tool.call(code="await tools.where()").content == 'Result (JSON): "here"'
    assert loops[1] is not loop


def test_the_spec_functions_return_run_results(weather_spec: ClamBotToolSpec) -> None:
    res = weather_spec.run_js_sandboxed("```js\n6 * 7\n```")
    assert isinstance(res, RunResult) and res.value == 42
    assert asyncio.run(weather_spec.arun_js_sandboxed("6 * 7")).value == 42
    with pytest.raises(ConfigError):
        weather_spec.run_js_sandboxed(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        asyncio.run(weather_spec.arun_js_sandboxed(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "ok"),
    [
        ((), {}, False),
        ((), {"code": 5}, False),
        ((), {"code": "1", "language": "javascript"}, True),  # extras are ignored
        (("1",), {}, True),  # positional
        ((), {"input": "1"}, True),  # a lone string under another name
        ((), {"a": "1", "b": "2"}, False),
    ],
)
def test_calls_without_a_code_string_are_error_outputs(
    args: tuple[Any, ...], kwargs: dict[str, Any], ok: bool
) -> None:
    tool = the_tool(ClamBotToolSpec())
    for out in (tool.call(*args, **kwargs), asyncio.run(tool.acall(*args, **kwargs))):
        assert out.is_error is not ok
        if ok:
            assert out.content == "Result (JSON): 1"
        else:
            assert out.raw_output is None
            assert "takes one argument, `code`" in out.content


def test_to_tool_list_variants(weather_spec: ClamBotToolSpec) -> None:
    meta = ToolMetadata(name="js", description="Run JavaScript.", fn_schema=RunJsSandboxedArgs)
    [tool] = weather_spec.to_tool_list(func_to_metadata_mapping={"run_js_sandboxed": meta})
    assert tool.metadata is meta
    assert tool.call(code="1 + 1").content == "Result (JSON): 2"
    assert len(weather_spec.to_tool_list(spec_functions=["run_js_sandboxed"])) == 1
    with pytest.raises(ValueError, match="not 'describe_tools'"):
        weather_spec.to_tool_list(spec_functions=["describe_tools"])
    [again] = asyncio.run(weather_spec.to_tool_list_async())
    assert again.metadata.name == "run_js_sandboxed"


def test_a_ready_sandbox_can_be_given_but_not_with_other_settings() -> None:
    sb = Sandbox(bindings=[binding(lambda n: n * 2, name="double")])
    spec = ClamBotToolSpec(sandbox=sb)
    assert spec.sandbox is sb
    assert the_tool(spec).call(code="await tools.double({n: 21})").content == "Result (JSON): 42"
    with pytest.raises(ConfigError, match="not both"):
        ClamBotToolSpec(sandbox=sb, limits=Limits())
    with pytest.raises(ConfigError, match="not both"):
        ClamBotToolSpec([get_weather], sandbox=sb)


def test_plain_callables_and_bindings_are_granted_too() -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    spec = ClamBotToolSpec([add, binding(lambda: "pong", name="ping")])
    out = the_tool(spec).call(code="[await tools.add({a: 1, b: 2}), await tools.ping()]")
    assert out.raw_output.value == [3, "pong"]
    with pytest.raises(ConfigError, match="share the name"):
        ClamBotToolSpec([add, FunctionTool.from_defaults(add)])


# -- markdown fences (the rules themselves: the core's tests/test_render.py)


def test_strip_code_fences_is_the_cores() -> None:
    assert strip_code_fences is render.strip_code_fences
    assert cap is render.cap


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r"])
def test_fenced_code_errs_on_the_line_the_model_wrote(brk: str) -> None:
    """Line N of the error is line N of the code in the fence, as in the LangChain tool,
    and the frame shows that very line whatever the line breaks (it used to drift on
    \\r, U+2028 and U+2029)."""
    tool = the_tool(ClamBotToolSpec())
    lines = ["```javascript", "const s = 'a\u2028b';", "const b = 2;", "    a.b.c", "```", "Done."]
    out = tool.call(code=brk.join(lines))
    err = out.raw_output.error
    assert (err.kind, err.line, err.column) == ("runtime", 3, 5)
    assert (
        "At line 3, column 5 of the script:\n  2 | const b = 2;\n> 3 |     a.b.c\n    |     ^"
        in (out.content)
    )
    # prose before the fence is not stripped: only a leading fence is
    out = tool.call(code="Here you go:\n" + brk.join(lines))
    assert out.raw_output.error.kind == "syntax"
    assert "without prose or markdown" in out.content


# -- the text a run becomes


def test_error_text_has_kind_name_message_line_frame_and_hint() -> None:
    code = "const secret = 'do-not-echo-me';\nconst user = null;\nuser.name\nconst after = 1;"
    out = the_tool(ClamBotToolSpec()).call(code=code)
    assert out.is_error is True
    assert out.content == (
        "Error (runtime): TypeError: cannot read property 'name' of null\n"
        "At line 3, column 1 of the script:\n"
        "  2 | const user = null;\n"
        "> 3 | user.name\n"
        "    | ^\n"
        "Hint: A value is not what the script assumed: a misspelt name or field, or a "
        "value that is not an array or a function."
    )
    assert "do-not-echo-me" not in out.content and "after" not in out.content
    assert out.raw_output.error.name == "TypeError"


@pytest.mark.parametrize(
    ("code", "kind", "hint"),
    [
        ("return 5", "syntax", "instead of `return x`, end the script with the expression"),
        ("let x: number = 1", "syntax", "That is TypeScript: write plain JavaScript"),
        ("require('fs')", "runtime", "no require, fetch, process"),
        ("await tools.get_wether({city: 'x'})", "runtime", "did you mean get_weather?"),
        ("await tools.get_weather({})", "binding_failed", "the arguments its declaration lists"),
        ("while (true) {}", "timeout", "time limit"),
        ("function f() { return f() + 1 }\nf()", "stack", "use a loop"),
        ("'x'.repeat(1000)", "output_limit", "return a smaller result"),
        ("throw 'oops'", "runtime", "try/catch"),
    ],
)
def test_each_kind_of_error_comes_with_a_hint(code: str, kind: str, hint: str) -> None:
    spec = ClamBotToolSpec(
        [FunctionTool.from_defaults(get_weather)],
        limits=Limits(timeout_s=0.3, max_result_bytes=100),
    )
    out = the_tool(spec).call(code=code)
    assert out.is_error and out.raw_output.error.kind == kind
    assert out.content.startswith(f"Error ({kind}): ")
    assert "\nHint: " in out.content
    assert hint in out.content


def test_a_denied_call_says_so() -> None:
    def refund(order_id: str) -> str:
        """Refund an order."""
        raise AssertionError("never called")

    tool = binding_from_tool(FunctionTool.from_defaults(refund), effects=("write",))
    spec = ClamBotToolSpec([tool], policy=Policy(deny_effects=["write"]))
    out = the_tool(spec).call(code="await tools.refund({order_id: 'A'})")
    assert out.raw_output.error.kind == "binding_denied"
    assert "will refuse it again: do not retry it unchanged" in out.content
    assert "refund" not in spec.describe_tools()  # what the policy refuses is not declared


def test_long_values_messages_and_logs_are_capped_with_a_marker() -> None:
    spec = ClamBotToolSpec(max_output_chars=1000)
    tool = the_tool(spec)
    out = tool.call(code="['a'.repeat(50000), 'END'].join('')")
    assert out.raw_output.value.endswith("END")  # raw output keeps everything
    assert len(out.content) <= 1000 and "characters cut …]" in out.content
    assert out.content.startswith('Result (JSON): "aaa') and out.content.endswith('END"')

    out = tool.call(
        code="for (let i = 0; i < 5000; i++) console.log('line ' + i);\n"
        "throw new Error('m'.repeat(9000))"
    )
    assert out.is_error and len(out.content) <= 1400
    assert "Error: mmm" in out.content and "characters cut" in out.content
    assert "Console output before the error:\nline 0\n" in out.content
    assert "line 4999" in out.content

    out = tool.call(code="({list: Array.from({length: 3000}, (_, i) => i)})")
    assert out.content.startswith('Result (JSON): {"list":[0,1,2') and len(out.content) <= 1000

    out = tool.call(
        code="for (let i = 0; i < 3000; i++) console.log('line ' + i);\n'v'.repeat(5000)"
    )
    assert not out.is_error and len(out.content) <= 1000
    assert (
        out.content.startswith('Result (JSON): "vvv') and "Console output:\nline 0" in out.content
    )


def test_a_string_built_by_concatenation_can_be_the_result() -> None:
    out = the_tool(ClamBotToolSpec()).call(
        code="let s = '';\nfor (let i = 0; i < 2000; i++) s += 'abcdefghij';\ns"
    )
    assert not out.is_error, out.content
    assert out.raw_output.value == "abcdefghij" * 2000


def test_a_long_line_shows_a_window_around_the_column() -> None:
    code = "const xs = [" + "1, " * 2000 + "];" + " " * 10 + "xs.nope.x;" + " 0;" * 500
    out = the_tool(ClamBotToolSpec()).call(code=code)
    err = out.raw_output.error
    assert err.line == 1
    frame = out.content.split("\n")[2:4]
    assert frame[0].startswith("> 1 | …") and frame[0].endswith("…")
    assert len(frame[0]) < 140
    caret = frame[1].index("^")
    assert frame[0][caret : caret + 10] == "xs.nope.x;"


def test_format_run_result_on_its_own() -> None:
    sb = Sandbox()
    assert format_run_result(sb.run("undefined")).startswith("Result: null (the last expression")
    assert format_run_result(sb.run("'two\\nlines'")) == "Result (text):\ntwo\nlines"
    assert format_run_result(sb.run("[1/0, -0]")) == "Result (JSON): [Infinity,-0.0]"
    assert format_run_result(sb.run("0/0")).startswith("Result (JSON): NaN\nHint: The result")
    text = format_run_result(sb.run("null.x"))  # no code: where, but no frame
    assert "At line 1, column 1 of the script.\n" in text and "| " not in text


# -- LlamaIndex tools as bindings


def test_sync_function_tool_goes_through_call_with_callbacks_and_partials() -> None:
    seen: list[Any] = []

    def lookup(key: str, table: str) -> dict[str, Any]:
        """Look a key up."""
        seen.append(threading.current_thread().name)
        return {"key": key, "table": table}

    tool = FunctionTool.from_defaults(
        lookup,
        partial_params={"table": "users"},
        callback=lambda raw: seen.append(("callback", raw)),
    )
    b = binding_from_tool(tool)
    assert (b.name, b.is_async, b.effects) == ("lookup", False, ("read",))
    assert b.description.endswith("Look a key up.")
    out = the_tool(ClamBotToolSpec([b])).call(code="await tools.lookup({key: 'k'})")
    assert out.raw_output.value == {"key": "k", "table": "users"}
    assert ("callback", {"key": "k", "table": "users"}) in seen
    assert "table" not in ClamBotToolSpec([b]).describe_tools()


class Filter(BaseModel):
    city: str
    min_temp: float = 0.0


def test_pydantic_results_and_arguments_cross_as_json() -> None:
    received: list[Any] = []

    def search(where: Filter, limit: int = 3) -> list[Weather]:
        """Search the weather."""
        received.append((where, limit))
        return [Weather(city=where["city"], temp_c=21.5)]

    spec = ClamBotToolSpec([FunctionTool.from_defaults(search)])
    out = the_tool(spec).call(code="await tools.search({where: {city: 'Rome'}})")
    assert out.raw_output.value == [{"city": "Rome", "temp_c": 21.5}]
    # as an agent would pass them: the nested model arrives as a plain dict
    assert received == [({"city": "Rome", "min_temp": 0.0}, 3)]
    assert "Promise<{ city: string; temp_c: number }[]>" in spec.describe_tools()


def test_non_json_outputs_reach_the_script_as_their_text() -> None:
    def fetch_doc(doc_id: str) -> Document:
        """Fetch a document."""
        return Document(text=f"the text of {doc_id}")

    spec = ClamBotToolSpec([FunctionTool.from_defaults(fetch_doc)])
    out = the_tool(spec).call(code="await tools.fetch_doc({doc_id: 'd1'})")
    assert out.raw_output.value == "the text of d1"
    assert "fetch_doc(args: { doc_id: string }): Promise<unknown>" in spec.describe_tools()


def test_tool_failures_reject_in_the_script() -> None:
    def explode(why: str) -> str:
        """Always fails."""
        raise RuntimeError(f"it broke: {why}")

    class Sulky(AsyncBaseTool):
        """An async tool that answers with an error output."""

        @property
        def metadata(self) -> ToolMetadata:
            return ToolMetadata(name="sulky", description="Says no.")

        def call(self, input: Any) -> ToolOutput:
            raise AssertionError("the async path is used")

        async def acall(self, input: Any) -> ToolOutput:
            return ToolOutput(
                content=f"no to {input}",
                tool_name="sulky",
                raw_input={"input": input},
                raw_output=None,
                is_error=True,
            )

    spec = ClamBotToolSpec([FunctionTool.from_defaults(explode), Sulky()])
    tool = the_tool(spec)
    caught = tool.call(
        code="const out = [];\nfor (const p of [tools.explode({why: 'x'}), "
        "tools.sulky({input: 'y'})]) {\n"
        "  try { await p } catch (e) { out.push(e.message) }\n}\nout"
    )
    assert caught.raw_output.value == ["it broke: x", "no to y"]
    out = tool.call(code="await tools.explode({why: 'z'})")
    assert out.is_error and out.raw_output.error.kind == "binding_failed"
    assert 'Error: tools.explode({"why":"z"}) failed: it broke: z' in out.content


def test_a_plain_base_tool_is_called_through_dunder_call() -> None:
    class Echo(BaseTool):
        """A BaseTool that is not an AsyncBaseTool."""

        @property
        def metadata(self) -> ToolMetadata:
            return ToolMetadata(name="echo", description="Echo the input.")

        def __call__(self, input: Any) -> ToolOutput:
            return ToolOutput(
                content=str(input),
                tool_name="echo",
                raw_input={"input": input},
                raw_output={"echo": input},
            )

    b = binding_from_tool(Echo(), name="repeat", description="Say it again.")
    assert (b.name, b.description, b.is_async) == ("repeat", "Say it again.", False)
    out = the_tool(ClamBotToolSpec([b])).call(code="await tools.repeat({input: 'hi'})")
    assert out.raw_output.value == {"echo": "hi"}


async def with_quoted_ctx(ctx: "Context", x: int) -> int:
    """Needs the workflow context (a string annotation FunctionTool does not resolve)."""
    return x


def test_tools_that_cannot_be_granted() -> None:
    async def with_ctx(ctx: Context, x: int) -> int:
        """Needs the workflow context."""
        return x

    with pytest.raises(ConfigError, match="workflow Context"):
        binding_from_tool(FunctionTool.from_defaults(async_fn=with_ctx))
    quoted = FunctionTool.from_defaults(async_fn=with_quoted_ctx)
    assert not quoted.requires_context
    with pytest.raises(ConfigError, match="workflow Context"):
        binding_from_tool(quoted)
    nameless = FunctionTool(fn=lambda: 1, metadata=ToolMetadata(description="x"))
    with pytest.raises(ConfigError, match="no name"):
        binding_from_tool(nameless)
    with pytest.raises(ConfigError, match="unknown effects"):
        binding_from_tool(FunctionTool.from_defaults(get_weather), effects=("launch",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a LlamaIndex BaseTool"):
        binding_from_tool(get_weather)  # type: ignore[arg-type]


def test_the_core_never_imports_llama_index() -> None:
    probe = (
        "import sys, clambot_tools, clambot_tools.stdlib.files, clambot_tools.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'llama_index')\n"
        "print(json.dumps(bad))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == []


# -- text that always encodes


def test_the_tool_output_always_encodes_and_raw_output_stays_exact() -> None:
    """A script returning, logging or throwing lone surrogates: the content (what the
    model provider gets) encodes to UTF-8, the RunResult keeps the exact strings, and
    the ToolOutput's own JSON encodes (U+FFFD there)."""
    tool = the_tool(ClamBotToolSpec())
    out = tool.call(code="console.log('log \\ud800'); ({['key \\udfff']: 'value \\ud800'})")
    assert out.content == (
        'Result (JSON): {"key \\udfff":"value \\ud800"}\nConsole output:\nlog \\ud800'
    )
    out.content.encode("utf-8")
    assert out.raw_output.value == {"key \udfff": "value \ud800"}
    assert out.raw_output.logs[0].message == "log \ud800"
    assert json.loads(out.model_dump_json())["raw_output"]["value"] == {
        "key \ufffd": "value \ufffd"
    }
    failed = tool.call(code="const e = new Error('thrown'); e.stack = 'at \\ud800'; throw e")
    assert failed.is_error
    failed.content.encode("utf-8")
