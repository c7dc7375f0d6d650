"""Rendering a RunResult for notebooks: readable, capped, and never markup from the script."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clambot_tools import Limits, LogEntry, RunError, RunResult, RunStats, Sandbox
from clambot_tools._display import (
    MAX_LOGS,
    run_result_html,
    run_result_markdown,
    run_result_text,
)

STATS = RunStats(duration_ms=1.5, memory_bytes=170_000, binding_calls=2)

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "\"'><svg/onload=alert(1)>",
    "</pre></div><script>alert(1)</script>",
    "&lt;script&gt;",
    "javascript:alert(1)",
    "```\n<script>alert(1)</script>\n```",
    "[click](javascript:alert(1)) **bold** <b>x</b>",
]

# -- an HTML checker: which tags and attributes the output really contains

_OUR_TAGS = {"div", "span", "pre", "details", "summary"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_only_our_markup(out: str) -> str:
    """Fail unless `out` holds only our own tags and attributes; return its text."""
    p = _Tags()
    p.feed(out)
    p.close()
    for tag, attrs in p.tags:
        assert tag in _OUR_TAGS, f"unexpected tag <{tag}> in {out!r}"
        for name, value in attrs:
            assert name in ("style", "class"), f"unexpected attribute {name}={value!r}"
            assert value is not None and "javascript" not in value and "url(" not in value
    return "".join(p.text)


def result(
    value: object = None, *, logs: list[LogEntry] | None = None, error: RunError | None = None
) -> RunResult:
    return RunResult(ok=error is None, value=value, logs=logs or [], error=error, stats=STATS)


# -- the value


def test_value_is_pretty_json_in_every_format() -> None:
    res = result({"city": "Paris", "temps": [1, 2.5], "nested": {"ok": True, "none": None}})
    for render in (run_result_html, run_result_markdown, run_result_text):
        out = render(res)
        assert '"city": "Paris"' in out or "&quot;city&quot;: &quot;Paris&quot;" in out
        assert "true" in out and "null" in out
    assert '```json\n{\n  "city": "Paris",' in run_result_markdown(res)


def test_values_beyond_json_show_as_javascript_would() -> None:
    out = run_result_text(result([float("nan"), float("inf"), -0.0, 10**30]))
    assert "NaN" in out and "Infinity" in out and "-0.0" in out and str(10**30) in out


def test_a_huge_value_is_capped() -> None:
    res = result(["x" * 1000] * 1000)  # ~1 MB of JSON
    for render in (run_result_html, run_result_markdown, run_result_text):
        out = render(res)
        assert len(out) < 30_000
        assert "characters cut …]" in out
    assert len(run_result_text(res, max_value_chars=100)) < 1000


def test_any_value_is_shown() -> None:
    deep: list[object] = []
    cur = deep
    for _ in range(100_000):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    text = run_result_text(result(deep))  # deeper than json.dumps goes: shown, capped
    assert text.count("[") > 100 and "characters cut" in text and text.endswith("]")
    assert "an integer of 16610 bits" in run_result_text(result(10**5000))  # past str()'s limit
    assert '"1j"' in run_result_text(result({"c": 1j}))


# -- logs


def test_logs_show_their_levels_in_order() -> None:
    logs = [
        LogEntry(level=lvl, message=f"m-{lvl}") for lvl in ("log", "info", "warn", "error", "debug")
    ]
    res = result(1, logs=logs)
    text = run_result_text(res)
    order = [text.index(f"[{lvl}]".ljust(8) + f"m-{lvl}") for lvl in ("log", "warn", "debug")]
    assert order == sorted(order)
    html = run_result_html(res)
    assert "[error] " in html and "m-error" in html and "logs" in html
    md = run_result_markdown(res)
    assert "logs (5):" in md and "[info]  m-info" in md


def test_multiline_log_messages_stay_aligned() -> None:
    text = run_result_text(result(1, logs=[LogEntry(level="warn", message="a\nb")]))
    assert "[warn]  a\n        b" in text


def test_many_logs_are_capped_and_counted() -> None:
    logs = [LogEntry(level="log", message=str(i)) for i in range(MAX_LOGS + 50)]
    for render in (run_result_html, run_result_markdown, run_result_text):
        out = render(result(1, logs=logs))
        if render is run_result_html:
            out = assert_only_our_markup(out)
        assert "50 more log entries not shown" in out
        assert f"[log]   {MAX_LOGS - 1}" in out
        assert f"[log]   {MAX_LOGS}\n" not in out


def test_a_long_log_message_is_capped() -> None:
    out = run_result_text(result(1, logs=[LogEntry(level="log", message="y" * 100_000)]))
    assert len(out) < 10_000 and "characters cut …]" in out


# -- errors and the code frame


def test_error_shows_kind_name_message_and_where() -> None:
    err = RunError(
        kind="runtime",
        name="TypeError",
        message="x is undefined",
        line=2,
        column=3,
        stack="    at <eval> (script.js:2:3)\n",
    )
    res = result(error=err)
    for render in (run_result_html, run_result_markdown, run_result_text):
        out = render(res)
        assert "runtime" in out and "TypeError: x is undefined" in out
        assert "line 2, column 3" in out.replace("\\,", ",")  # Markdown escapes the comma
        assert "script.js:2:3" in out or render is run_result_text


def test_frame_marks_the_column_under_the_failing_line() -> None:
    code = "const a = 1;\nconst b = 2;\n  a.b.c = 3;\nconst z = 0;"
    err = RunError(kind="runtime", name="TypeError", message="boom", line=3, column=3)
    text = run_result_text(result(error=err), code)
    assert "  1 | const a = 1;\n  2 | const b = 2;\n> 3 |   a.b.c = 3;\n    |   ^" in text
    assert "const z" not in text  # nothing after the failing line
    md = run_result_markdown(result(error=err), code)
    assert "> 3 |   a.b.c = 3;\n    |   ^" in md
    html = run_result_html(result(error=err), code)
    assert "&gt; 3 |   a.b.c = 3;\n    |   ^" in html


def test_without_code_or_line_there_is_no_frame() -> None:
    err = RunError(kind="runtime", name="TypeError", message="boom", line=1, column=1)
    assert "|" not in run_result_text(result(error=err))
    mem = RunError(kind="memory", name="MemoryLimitError", message="too much")
    assert "|" not in run_result_text(result(error=mem), "let a = [];")
    # a limit's position is where the script was stopped: no frame, no "at line"
    spin = RunError(
        kind="timeout",
        name="InternalError",
        message="too long",
        line=1,
        column=1,
        stack="    at <eval> (script.js:1:1)\n",
    )
    text = run_result_text(result(error=spin), "while (true) {}")
    assert "|" not in text and "line 1" not in text
    assert "script.js:1:1" in run_result_html(result(error=spin), "while (true) {}")  # stack
    # a line the code does not have (another script's error): no frame either
    far = RunError(kind="runtime", name="E", message="m", line=40, column=1)
    assert "|" not in run_result_text(result(error=far), "1;\n2;")


def test_frames_of_real_errors() -> None:
    sb = Sandbox(limits=Limits(timeout_s=0.3, memory_mb=8))
    code = "const ok = 1;\nconst s = '日本'; null.boom;\n"
    res = sb.run(code)
    text = run_result_text(res, code)
    assert "> 2 | const s = '日本'; null.boom;\n    |                   ^" in text
    code = "let x = 1;\nlet y = (;\n"
    res = sb.run(code)
    assert res.error is not None and res.error.kind == "syntax"
    assert "> 2 | let y = (;\n    |          ^" in run_result_text(res, code)
    bomb = "let a = []; while (true) a.push(new Array(1e5).fill(1));"
    out = run_result_html(sb.run(bomb), bomb)
    assert "memory" in out and "MiB memory limit" in out
    spin = "function spin() { for (;;) {} }\nspin();"
    assert "timeout" in run_result_markdown(sb.run(spin), spin)


def test_stats_are_shown() -> None:
    stats = RunStats(duration_ms=2500, memory_bytes=3 << 20, binding_calls=1, fuel_used=12345)
    out = run_result_text(RunResult(ok=True, value=1, stats=stats))
    assert "2.50 s" in out and "3.0 MiB memory" in out and "1 tool call" in out
    assert "12,345 fuel" in out
    assert "2 tool calls" in run_result_text(result(1))


# -- untrusted text: no injection


@pytest.mark.parametrize("payload", HOSTILE)
def test_html_escapes_everything_the_script_controls(payload: str) -> None:
    code = f"// {payload}\nboom()"
    err = RunError(
        kind="runtime",
        name=payload,
        message=payload,
        line=2,
        column=1,
        stack=f"    at {payload} (script.js:2:1)\n",
    )
    for res in (
        result({payload: [payload]}, logs=[LogEntry(level="warn", message=payload)]),
        result(error=err, logs=[LogEntry(level="log", message=payload)]),
    ):
        out = run_result_html(res, code)
        text = assert_only_our_markup(out)
        assert payload.split("\n")[0] in text  # shown, as text


def test_html_of_hostile_real_runs() -> None:
    sb = Sandbox(limits=Limits(timeout_s=1))
    code = (
        "const e = new Error('<script>alert(1)</script>');\n"
        "e.name = '<img src=x onerror=alert(2)>';\n"
        "console.log('</pre><script>alert(3)</script>');\n"
        "throw e;"
    )
    res = sb.run(code)
    assert res.error is not None and "<img" in res.error.name
    text = assert_only_our_markup(run_result_html(res, code))
    assert "<img src=x onerror=alert(2)>" in text and "alert(3)" in text
    res = sb.run("({'<b>k</b>': '<i>v</i>', s: '\\u202e\\ud800'})")
    text = assert_only_our_markup(run_result_html(res))
    assert '"<b>k</b>": "<i>v</i>"' in text
    assert "\\u202e\\ud800" in text


def _fences(md: str) -> list[tuple[str, str]]:
    """The fenced blocks of `md` as (fence, body), parsed the CommonMark way."""
    blocks = []
    lines = md.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})", lines[i])
        if m:
            fence = m.group(1)
            j = i + 1
            while not re.fullmatch(f"`{{{len(fence)},}}\\s*", lines[j]):
                j += 1
            blocks.append((fence, "\n".join(lines[i + 1 : j])))
            i = j + 1
        else:
            i += 1
    return blocks


@pytest.mark.parametrize("payload", HOSTILE)
def test_markdown_keeps_script_text_in_fences_or_escaped(payload: str) -> None:
    err = RunError(kind="runtime", name=payload, message=payload, line=1, column=1)
    res = result(error=err, logs=[LogEntry(level="log", message=payload)])
    md = run_result_markdown(res, payload)
    outside = md
    for fence, body in _fences(md):
        assert payload.split("\n")[0] in body or "```" in payload
        outside = outside.replace(f"{fence}text\n{body}\n{fence}", "")
    # nothing of the payload outside the fences
    assert "<" not in outside and "`" not in outside.replace("\\`", "")


def test_markdown_escapes_inline_text() -> None:
    # an error kind that is not one of ours (model_construct skips validation) is escaped
    odd = RunError.model_construct(kind="<b>x</b>", name="n", message="m")
    head = run_result_markdown(result(error=odd)).split("\n")[0]
    assert "\\<b\\>x\\<\\/b\\>" in head


def test_markdown_fence_outgrows_the_backticks_inside() -> None:
    md = run_result_markdown(result("````` five", logs=[LogEntry(level="log", message="```")]))
    blocks = _fences(md)
    assert [len(f) for f, _ in blocks] == [6, 4]
    assert '"````` five"' in blocks[0][1]


def test_invisible_and_control_characters_are_made_visible() -> None:
    nasty = "a\x1b[31mred\x00\u202eevil\u2066\ufeff\u200b\ud800"
    res = result(nasty, logs=[LogEntry(level="log", message=nasty)])
    for render in (run_result_html, run_result_markdown, run_result_text):
        out = render(res)
        out.encode("utf-8")  # no lone surrogate left
        for ch in ("\x1b", "\x00", "\u202e", "\u2066", "\ufeff", "\u200b"):
            assert ch not in out
        assert "\\u202e" in out
        assert "\\x1b" in out or "\\u001b" in out


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_any_text_stays_text(a: str, b: str) -> None:
    err = RunError(kind="runtime", name=a, message=b, line=1, column=len(a) + 1, stack=f"at {a}")
    res = result(error=err, logs=[LogEntry(level="error", message=a + b)])
    assert_only_our_markup(run_result_html(res, a + "\n" + b))
    ok = result({a: b}, logs=[LogEntry(level="log", message=b)])
    assert_only_our_markup(run_result_html(ok))
    md = run_result_markdown(ok, a)
    for fence, body in _fences(md):
        assert not re.search(f"^`{{{len(fence)},}}\\s*$", body, re.M)


# -- RunResult's own reprs (wired in _result.py to these functions)


@pytest.mark.skipif(not hasattr(RunResult, "_repr_html_"), reason="RunResult reprs not wired")
def test_run_result_reprs_use_these_renderings() -> None:
    res = result({"a": 1}, logs=[LogEntry(level="info", message="<hi>")])
    assert res._repr_html_() == run_result_html(res)
    assert res._repr_markdown_() == run_result_markdown(res)
