"""clambot_tools.render: the one set of rules for what a model (and a person) reads of a
run: lines as the engine counts them, fences, frames, caps, hints, the model's text and
the tool's description."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clambot_tools import (
    Approval,
    Limits,
    LogEntry,
    Policy,
    RunError,
    RunResult,
    RunStats,
    Sandbox,
    binding,
    render,
)
from clambot_tools.render import (
    cap,
    code_frame,
    hint,
    js_lines,
    model_text,
    strip_code_fences,
    tool_description,
    value_text,
)

STATS = RunStats(duration_ms=1.0)


def ok(value: Any, *logs: str) -> RunResult:
    return RunResult(
        ok=True, value=value, logs=[LogEntry(level="log", message=m) for m in logs], stats=STATS
    )


def get_order(order_id: str) -> dict[str, Any]:
    """Get one order."""
    if order_id == "A-13":
        raise LookupError(f"no order with id {order_id}")
    return {"id": order_id, "items": [{"sku": "x", "line_total": 2.5}]}


@pytest.fixture(scope="module")
def shop() -> Sandbox:
    return Sandbox(bindings=[binding(get_order)], limits=Limits(timeout_s=2))


# -- lines as the engine counts them


_PIECES = st.sampled_from(
    ["0;", "'s';", '"t";', "`u`;", "`v${1}w`;", "/* c */", "// d\n", "({x: 1});", " ", "'\\\n';"]
)
_BREAKS = st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\u2029"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            _PIECES,
            _BREAKS,
            st.sampled_from(["code", "string", "template", "line comment", "block comment"]),
        ),
        max_size=6,
    )
)
def test_lines_are_the_engines_lines(parts: list[tuple[str, str, str]]) -> None:
    """QuickJS-NG does not count U+2028/U+2029 inside strings, templates and comments,
    nor a lone CR in a block comment: js_lines must agree with it everywhere."""
    code = ""
    for piece, brk, where in parts:
        code += (
            piece
            + {
                "code": f"0;{brk}",
                "string": f"'a{brk}b';" if brk in "\u2028\u2029" else f"'a\\{brk}b';",
                "template": f"`a{brk}b`;",
                "line comment": f"// x{brk}\n",
                "block comment": f"/* x{brk} */",
            }[where]
        )
    code += "\n  __mark__.x"
    res = Sandbox().run(code)
    err = res.error
    assert err is not None and err.name == "ReferenceError", (code, err)
    assert err.line is not None and err.column is not None
    line = js_lines(code)[err.line - 1]
    assert line[err.column - 1 :].startswith("__mark__"), (code, err.line, line)


def test_plain_lines_split_on_newlines_only() -> None:
    assert js_lines("a\nb\n") == ["a", "b", ""]
    assert js_lines("a\r\nb\rc\u2028d") == ["a", "b", "c", "d"]
    assert js_lines("'x\u2028y';\nz") == ["'x\u2028y';", "z"]


# -- fences


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("```js\nconst a = 1;\na + 1\n```", "const a = 1;\na + 1"),
        ("```javascript\n1\n```\n", "1"),
        ("\n  ```\n\n2\n```", "\n2"),  # blank lines inside the fence stay: lines stay right
        ("```ts\n3", "3"),  # never closed
        ("```js\n1 + 1```", "1 + 1"),  # closed on the last line of code
        ("```1 + 1```", "1 + 1"),  # one line
        ("~~~js\n4\n~~~", "4"),
        ("````js\nconst s = '```';\n```\ns\n````", "const s = '```';\n```\ns"),
        ("```js\r\n5\r\n6\r\n```\r\n", "5\r\n6"),
        ("```js\nconst s = 'a\u2028b';\n7\n```", "const s = 'a\u2028b';\n7"),
        ("\n  ```javascript  \nconst a = 1;\na\n```\nThis returns a.", "const a = 1;\na"),
        # two blocks with prose between: joined, each line in its place
        ("```ts\nconst a = 1;\n```\nthen\n```ts\na + 1\n```", "const a = 1;\n\n\n\na + 1"),
        # a fence that is not the first thing is JavaScript's business, not ours
        ("const s = `\n```\n`; s", "const s = `\n```\n`; s"),
        ("Here it is:\n```js\n1\n```", "Here it is:\n```js\n1\n```"),
        ("``", "``"),
        ("1 + 1", "1 + 1"),
        ("", ""),
    ],
)
def test_strip_code_fences(text: str, script: str) -> None:
    assert strip_code_fences(text) == script


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r"])
def test_line_n_of_an_error_is_line_n_of_the_fenced_code(brk: str) -> None:
    """The same fenced script errs on the same line in every adapter: the line of the
    code the model wrote inside the fence, and the frame shows that line."""
    fenced = brk.join(["```js", "const a = {};", "const s = 'x\u2028y';", "  a.b.c", "```"])
    script = strip_code_fences(fenced)
    res = Sandbox().run(script)
    err = res.error
    assert err is not None and (err.line, err.column) == (3, 3)
    text = model_text(res, script)
    assert "At line 3, column 3 of the script:" in text
    assert ">  3 |   a.b.c" not in text and "> 3 |   a.b.c\n    |   ^" in text


# -- frames


@pytest.mark.parametrize(
    ("code", "column", "marker"),
    [
        ('"é"; x.y', 6, "     ^"),  # columns count characters
        ('"😀"; x.y', 6, "      ^"),  # an emoji: one character, two cells wide
        ('"日本"; x.y', 7, "        ^"),  # wide characters take two cells each
        ("\tx.y", 2, "\t^"),  # tabs are kept so the marker aligns
        ("foo(", 5, "    ^"),  # past the end (a syntax error at the end of input)
        ("\u202ex.y", 2, "      ^"),  # an invisible character is shown as \u202e
    ],
)
def test_marker_sits_under_the_reported_character(code: str, column: int, marker: str) -> None:
    frame = code_frame(code, 1, column)
    assert frame is not None
    assert frame.marker == marker
    assert "\u202e" not in frame.lines[-1][1]


def test_frame_follows_the_engines_line_breaks() -> None:
    for sep in ("\n", "\r\n", "\r", "\u2028", "\u2029"):
        frame = code_frame(f"let s = 1;{sep}x.y", 2, 1)
        assert frame is not None and frame.lines[-1] == (2, "x.y"), sep


def test_a_long_line_is_windowed_around_the_column() -> None:
    code = "a" * 5000 + "BOOM" + "b" * 5000
    frame = code_frame(code, 1, 5001)
    assert frame is not None
    shown = frame.lines[-1][1]
    assert len(shown) < 200 and shown.startswith("…") and shown.endswith("…")
    assert shown[len(frame.marker) - 1 :].startswith("BOOM")


def test_context_lines_skip_blank_ones_and_stop_at_the_failing_line() -> None:
    frame = code_frame("a;\n\n  b.c;\nafter;", 3, 3, context=1)
    assert frame is not None and frame.render() == "> 3 |   b.c;\n    |   ^"
    frame = code_frame("a;\nb;\nc.d;\nafter;", 3, 1, context=2)
    assert frame is not None
    assert frame.render() == "  1 | a;\n  2 | b;\n> 3 | c.d;\n    | ^"


# -- caps


def test_cap_keeps_start_and_end_and_says_how_much_was_cut() -> None:
    assert cap("abc", 3) == "abc"
    text = "".join(str(i % 10) for i in range(10_000))
    out = cap(text, 200)
    assert len(out) <= 200
    assert out.startswith(text[:50]) and out.endswith(text[-30:])
    cut = int(out.split("[… ")[1].split(" of")[0].replace(",", ""))
    assert "of 10,000 characters cut …]" in out
    assert len(out) - len(out[out.index(" [") : out.index("] ") + 2]) + cut == 10_000


# -- values


def test_value_text_is_json_as_javascript_shows_it() -> None:
    assert value_text([math.nan, math.inf, -math.inf, 1.5]) == "[NaN,Infinity,-Infinity,1.5]"
    assert value_text({"a": "x"}, indent=2) == '{\n  "a": "x"\n}'
    # lone surrogates as JSON.stringify writes them; invisible characters escaped
    text = value_text({"k\ud800": "a\udfffb\u202e\x1b"})
    assert text == '{"k\\ud800":"a\\udfffb\\u202e\\u001b"}'
    text.encode("utf-8")
    assert json.loads(text) == {"k\ud800": "a\udfffb\u202e\x1b"}  # the same value
    deep: Any = 1
    for _ in range(50_000):
        deep = [deep]
    assert value_text(deep) == "[" * 50_000 + "1" + "]" * 50_000


# -- the model's text


def test_a_success_is_its_value_then_its_logs(shop: Sandbox) -> None:
    res = shop.run("console.log('hi', 1); console.warn('careful'); ({a: [1, 'x'], b: null})")
    assert model_text(res) == (
        'Result (JSON): {"a":[1,"x"],"b":null}\nConsole output:\nhi 1\n[warn] careful'
    )
    assert model_text(shop.run("const x = 1;")).startswith("Result: null (the last expression")


def test_value_and_logs_are_capped_with_a_marker(shop: Sandbox) -> None:
    res = shop.run("for (let i = 0; i < 3000; i++) console.log('line ' + i);\n'v'.repeat(5000)")
    text = model_text(res, max_value_chars=300, max_log_chars=300)
    assert len(text) < 800 and text.count("characters cut …]") == 2
    assert "line 2999" in text  # the end of the logs stays: it is where things went wrong
    assert len(res.value) == 5000  # the RunResult keeps everything
    whole = model_text(res, max_chars=1000)
    assert len(whole) <= 1000 and whole.startswith('Result (JSON): "vvv')


def test_an_error_is_kind_message_line_frame_and_never_the_rest(shop: Sandbox) -> None:
    code = "const secret = 'do-not-echo';\nconst user = null;\nuser.name\nconst after = 1;"
    text = model_text(shop.run(code), code)
    assert text.splitlines()[:5] == [
        "Error (runtime): TypeError: cannot read property 'name' of null",
        "At line 3, column 1 of the script:",
        "  2 | const user = null;",
        "> 3 | user.name",
        "    | ^",
    ]
    assert "do-not-echo" not in text and "after" not in text


def test_an_error_in_a_function_has_a_call_stack(shop: Sandbox) -> None:
    code = "function f() {\n  throw new RangeError('bad n')\n}\n\nf()"
    text = model_text(shop.run(code), code)
    assert text.startswith("Error (runtime): RangeError: bad n\nAt line 2, column")
    assert "Call stack: f (line 2:" in text and "<- line 5:1" in text


def test_the_logs_before_an_error_and_the_calls_that_completed(shop: Sandbox) -> None:
    res = shop.run("console.log('step 1');\nnull.x")
    text = model_text(res, "console.log('step 1');\nnull.x", calls_done={"get_order": 3})
    assert "Console output before the error:\nstep 1" in text
    assert "Tool calls that completed before the error: tools.get_order x3." in text


def test_a_limit_has_no_misleading_frame() -> None:
    res = Sandbox(limits=Limits(timeout_s=0.2)).run("let i = 0\nwhile (true) { i++ }")
    text = model_text(res, "let i = 0\nwhile (true) { i++ }")
    assert text.startswith("Error (timeout): TimeoutError:")
    assert "0.2 s" in text and "At line" not in text and "|" not in text


def test_a_huge_message_is_capped(shop: Sandbox) -> None:
    text = model_text(shop.run("throw new Error('x'.repeat(100000))"))
    assert len(text) < 2000 and "characters cut …]" in text


_ANY_TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    _ANY_TEXT,
    _ANY_TEXT,
    st.recursive(
        st.none() | st.floats() | _ANY_TEXT,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_TEXT, inner, max_size=3),
        max_leaves=8,
    ),
)
def test_the_models_text_always_encodes(a: str, b: str, value: Any) -> None:
    """Whatever a script returns, logs or throws, the text encodes to UTF-8 and holds no
    control character but newlines and tabs (a model provider's request can carry it)."""
    err = RunError(kind="runtime", name=a, message=b, line=1, column=1, stack=f"at {a}")
    logs = [LogEntry(level="warn", message=a + b)]
    for res in (
        RunResult(ok=False, error=err, logs=logs, stats=STATS),
        RunResult(ok=True, value=value, logs=logs, stats=STATS),
    ):
        text = model_text(res, a + "\n" + b)
        text.encode("utf-8")
        assert not any(ord(c) < 0x20 and c not in "\n\t" for c in text)


def test_lone_surrogates_reach_the_model_as_escapes(shop: Sandbox) -> None:
    res = shop.run("console.log('x\\ud800y'); ({['k\\udfff']: 'a\\ud800b'})")
    assert res.value == {"k\udfff": "a\ud800b"}  # the value keeps them
    assert res.logs[0].message == "x\ud800y"  # so do the logs
    text = model_text(res)
    assert text == 'Result (JSON): {"k\\udfff":"a\\ud800b"}\nConsole output:\nx\\ud800y'
    text.encode("utf-8")


# -- hints that fit


def run_hint(sb: Sandbox, code: str) -> str | None:
    return hint(sb.run(code), code)


@pytest.mark.parametrize(
    "code",
    [
        "1 + 1",
        "const o = await tools.get_order({order_id: 'A-1'});\no.items.length",
        "console.log('done'); 'undefinedness is a word'",
        "const p = tools.get_order({order_id: 'A-1'});\nconst o = await p;\no.id",
        "const [a, b] = await Promise.all([tools.get_order({order_id: 'A'}), "
        "tools.get_order({order_id: 'B'})]);\na.id + b.id",
        "let ps = tools.get_order({order_id: 'A'});\n(await Promise.all([ps])).length",
        "({total: 3, note: 'fine'})",
    ],
)
def test_ordinary_successes_get_no_hint(shop: Sandbox, code: str) -> None:
    assert run_hint(shop, code) is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("const x = 1;\nswitch (x) {\n  case 1:\n    y(;\n}", "Fix the syntax"),  # not Python
        ("const o = {a: 1, b: Foo\n c: 2};", "Fix the syntax"),  # not TypeScript
        ("def f():\n  return 1", "That is Python"),
        ("import fs from 'fs';\n1", "No import or export"),
        ("let xs = new Map<string, number>();", "That is TypeScript"),
        ("const n = x as number;", "That is TypeScript"),
        ("```js\n1\n```\nthat's it\n", "without prose or markdown"),
        ("[1].forEach(x => { await tools.get_order({order_id: 'x'}) })", "`async`"),
    ],
)
def test_syntax_hints(shop: Sandbox, code: str, words: str) -> None:
    res = shop.run(code)
    assert res.error is not None and res.error.kind == "syntax"
    advice = hint(res, code)
    assert advice is not None and words in advice, advice


def test_a_refusal_a_denial_and_a_call_cap_each_say_what_to_do() -> None:
    @binding(effects=("write",))
    def refund(order_id: str) -> str:
        return "refunded"

    code = "await tools.refund({order_id: 'A'})"
    denied = Sandbox(bindings=[refund], policy=Policy(approve=lambda r: Approval.DENY))
    assert "did not approve this tools.refund call" in (run_hint(denied, code) or "")
    refused = Sandbox(bindings=[refund], policy=Policy(deny_effects=["write"]))
    assert "will refuse it again" in (run_hint(refused, code) or "")
    capped = Sandbox(bindings=[binding(get_order)], policy=Policy(max_calls=2))
    many = "for (const id of ['a', 'b', 'c']) await tools.get_order({order_id: id})"
    assert "fewer tool calls" in (run_hint(capped, many) or "")


def test_a_nan_anywhere_in_the_value_says_where(shop: Sandbox) -> None:
    code = "const o = await tools.get_order({order_id: 'A-1'});\n({n: 1, t: [o.totl * 2]})"
    advice = run_hint(shop, code)
    assert advice is not None and "NaN at $.t[0]" in advice and "tools.get_order" in advice


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("const o = await tools.get_order({order_id: 'A'});\n`total: ${o.totl}`", "`undefined`"),
        ("const o = tools.get_order({order_id: 'A'});\n`order: ${o}`", "not awaited"),
        ("const o = {a: 1};\n'' + o", "[object Object]"),
    ],
)
def test_slips_in_text_are_pointed_out(shop: Sandbox, code: str, words: str) -> None:
    advice = run_hint(shop, code)
    assert advice is not None and words in advice, advice


# -- the tool's description


def test_the_description_says_javascript_and_declares_the_tools(shop: Sandbox) -> None:
    text = tool_description(shop)
    assert text.startswith("Run a JavaScript program in a sandbox")
    assert "not Python, not TypeScript" in text and "Each run starts fresh." in text
    assert "one object of named arguments" in text and shop.describe_tools() in text
    assert "Limits: 2 s per run (tool calls included), 64 MiB." in text
    kept = tool_description(shop, sessions=True)
    assert "kept from one call of this tool to the next" in kept
    bare = tool_description(Sandbox(limits=Limits(timeout_s=1.5, memory_mb=32)))
    assert "No network, files or environment." in bare and "declare const tools" not in bare
    assert "1.5 s per run" in bare and "32 MiB" in bare


def test_a_description_with_a_limit_fits_it() -> None:
    tools = [
        binding(lambda order_id: order_id, name=f"lookup_order_{i}", description="Look up.")
        for i in range(40)
    ]
    sb = Sandbox(bindings=tools)
    for limit in (1024, 2000):
        text = tool_description(sb, max_chars=limit)
        assert len(text) <= limit and "tools.$describe" in text


# -- text that always encodes: RunResult's own JSON


def test_run_result_json_always_encodes_and_the_value_stays_exact(shop: Sandbox) -> None:
    res = shop.run("console.log('x\\ud800'); ({['k\\ud800']: ['a\\udfffb']})")
    text = res.model_dump_json()
    text.encode("utf-8")
    assert json.loads(text)["value"] == {"k\ufffd": ["a\ufffdb"]}
    assert json.loads(text)["logs"][0]["message"] == "x\ufffd"
    assert res.model_dump(mode="json")["value"] == {"k\ufffd": ["a\ufffdb"]}
    assert res.value == {"k\ud800": ["a\udfffb"]}  # unchanged
    err = shop.run("const e = new Error('m'); e.stack = 'at s\\ud800'; throw e").error
    assert err is not None and "\ud800" in (err.stack or "")
    assert "\ufffd" in err.model_dump_json()


def test_encodable_copies_only_what_needs_it(shop: Sandbox) -> None:
    clean = shop.run("({a: ['x'], b: 1})")
    assert clean.encodable() is clean
    odd = shop.run("console.log('fine'); ['\\ud800']")
    fixed = odd.encodable()
    assert fixed.value == ["\ufffd"] and odd.value == ["\ud800"]
    assert fixed.logs == odd.logs


# -- the modules that show runs do not import each other


def test_no_module_imports_one_that_imports_it() -> None:
    """Issue 16: no cycles (lazy imports inside functions count)."""
    root = Path(render.__file__).parent
    names = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    imports: dict[str, set[str]] = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (
                    ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    if node.level
                    else ""
                )
                module = ".".join(x for x in (base, node.module) if x)
                subs = {f"{module}.{a.name}" for a in node.names} & names.keys()
                found |= subs or ({module} & names.keys())
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names} & names.keys()
        imports[name] = found - {name}
    cycles = sorted(
        (a, b) for a, deps in imports.items() for b in deps if a < b and a in imports.get(b, ())
    )
    assert cycles == []


# -- the README says what the model reads


def test_readme_example_prints_what_it_says() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What the model reads back: `clambot_tools.render`", 1)[1]
    code = re.search(r"````python\n(.*?)````", section, re.S)
    expected = re.search(r"```text\n(.*?)```", section, re.S)
    assert code is not None and expected is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README.md", "exec", dont_inherit=True), {})
    assert out.getvalue() == expected.group(1)
