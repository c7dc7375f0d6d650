"""Readable renderings of a RunResult: HTML and Markdown for Jupyter, plain text for terminals.

The pieces (the value's JSON, the code frame, caps, where an error happened, the hint)
are ``clambot_tools.render``'s, shared with the text a model reads; this module only
lays them out. Everything in a RunResult may come from an untrusted script (the value,
the log messages, the error's name, message and stack), so every piece of it is
treated as hostile text:

* everywhere, control characters, bidi overrides, invisible characters and lone
  surrogates are made visible as escapes (``render.visible``, shared with the
  ``clambot`` command, whose terminal output is `run_result_text`);
* in HTML it is then escaped (``html.escape`` with quotes); the markup around it is
  ours and holds no script, no event handler and no URL;
* in Markdown it sits in code fences longer than any run of backticks it contains, or is
  backslash-escaped when inline, so it can neither close its block nor become HTML;
* everything is capped in size, so a 1 MiB result does not freeze a notebook.

A RunResult does not keep the script it ran; pass ``code`` to show the failing line with
a marker under the error's column (lines as QuickJS-NG numbers them, see
``render.js_lines``). Errors of a limit (timeout, memory, output_limit) and internal
ones get no frame: their position is where the script was stopped, not a mistake (the
stack, folded, still says where).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any, Protocol

from . import render
from ._hints import _Error, _Log, _Result
from .render import cap, frame_of, visible, where

#: default cap on the characters of the pretty-printed value
MAX_VALUE_CHARS = 20_000
#: log entries shown (the rest are counted)
MAX_LOGS = 200
#: characters shown of one log message, of an error message and of a stack
MAX_MESSAGE_CHARS = 4_000

_BACKTICKS = re.compile(r"`+")
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")

_LEVEL_COLORS = {
    "log": None,
    "info": "#1565c0",
    "debug": "#757575",
    "warn": "#e65100",
    "error": "#c62828",
}
_OK_COLOR = "#2e7d32"
_ERR_COLOR = "#c62828"


class _Stats(Protocol):
    @property
    def duration_ms(self) -> float: ...
    @property
    def memory_bytes(self) -> int | None: ...
    @property
    def binding_calls(self) -> int: ...
    @property
    def fuel_used(self) -> int | None: ...


class _Shown(_Result, Protocol):
    """What is shown of a RunResult (read through its fields only, so this module needs
    nothing from ``_result``, which calls it for Jupyter)."""

    @property
    def stats(self) -> _Stats: ...


def _h(text: str) -> str:
    """Untrusted text made safe for HTML (element content or a quoted attribute)."""
    return html.escape(visible(text), quote=True)


def _md_inline(text: str) -> str:
    """Untrusted text made safe for inline Markdown: one line, no markup, no HTML."""
    one_line = visible(text, keep_newlines=False)
    return _MD_PUNCT.sub(r"\\\1", one_line)


def _md_fence(text: str, info: str = "") -> str:
    """`text` in a fenced code block no line of it can close (CommonMark: a closing fence
    must be at least as long as the opening one)."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


# -- the pieces, as plain (unescaped, but visible and capped) text


def value_text(value: Any, max_chars: int = MAX_VALUE_CHARS) -> str:
    """The value as indented JSON (NaN and infinities as in JavaScript), capped."""
    return cap(render.value_text(value, indent=2), max_chars)


def _log_lines(logs: Sequence[_Log]) -> list[tuple[str, str]]:
    """(level, message) pairs to show, the message visible, capped and indented to align
    its continuation lines under the first."""
    out: list[tuple[str, str]] = []
    for entry in logs[:MAX_LOGS]:
        msg = visible(cap(entry.message, MAX_MESSAGE_CHARS))
        out.append((visible(str(entry.level)), msg.replace("\n", "\n" + " " * 8)))
    return out


def _logs_more(logs: Sequence[_Log]) -> str | None:
    extra = len(logs) - MAX_LOGS
    return f"… {extra:,} more log entries not shown" if extra > 0 else None


def _stats_parts(stats: _Stats) -> list[str]:
    ms = stats.duration_ms
    parts = [f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"]
    if stats.memory_bytes is not None:
        parts.append(f"{_size(stats.memory_bytes)} memory")
    n = stats.binding_calls
    parts.append(f"{n} tool call{'' if n == 1 else 's'}")
    if stats.fuel_used is not None:
        parts.append(f"{stats.fuel_used:,} fuel")
    return parts


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def _error_head(err: _Error) -> str:
    return visible(cap(f"{err.name}: {err.message}", MAX_MESSAGE_CHARS))


def _stack(err: _Error) -> str:
    return visible(cap((err.stack or "").rstrip("\n"), MAX_MESSAGE_CHARS))


def _hint(res: _Shown, code: str | None) -> str | None:
    advice = render.hint(res, code)
    return visible(advice) if advice else None


# -- HTML

_BOX = (
    "font-family: var(--jp-code-font-family, ui-monospace, SFMono-Regular, Menlo, monospace);"
    " font-size: 13px; border-left: 4px solid {color}; padding: 4px 10px; margin: 2px 0;"
)
_PRE = (
    "margin: 2px 0 6px 0; padding: 4px 6px; background: rgba(127, 127, 127, 0.08);"
    " white-space: pre-wrap; word-break: break-word; tab-size: 8; font-size: 12.5px;"
)
_LABEL = "font-weight: 600; margin-top: 4px;"
_MUTED = "opacity: 0.7; font-size: 12px; margin-top: 2px;"


def _badge(text: str, color: str) -> str:
    return (
        f'<span style="background: {color}; color: #fff; border-radius: 3px;'
        f' padding: 0 5px;">{_h(text)}</span>'
    )


def run_result_html(
    res: _Shown, code: str | None = None, *, max_value_chars: int = MAX_VALUE_CHARS
) -> str:
    """The RunResult as an HTML fragment (for Jupyter's ``_repr_html_``).

    Shows the value (indented JSON, capped at `max_value_chars`), the logs with their
    levels, the error (kind, name, message, where; the failing line of `code` with a
    marker under the column when `code` is given, except for limits; the stack, folded)
    and the stats.
    Every piece of the result is escaped: nothing a script returns or logs can become
    markup or script.
    """
    color = _OK_COLOR if res.ok else _ERR_COLOR
    out = [f'<div class="clambot-run-result" style="{_BOX.format(color=color)}">']
    err = res.error
    if res.ok or err is None:
        out.append(f'<div style="{_LABEL}">{_badge("ok", _OK_COLOR)} value</div>')
        out.append(
            f'<pre style="{_PRE}">{html.escape(value_text(res.value, max_value_chars))}</pre>'
        )
    else:
        at = where(err)
        where_html = f' <span style="{_MUTED}">at {html.escape(at)}</span>' if at else ""
        out.append(
            f'<div style="{_LABEL}">{_badge(err.kind, _ERR_COLOR)} '
            f'<span style="color: {_ERR_COLOR};">{html.escape(_error_head(err))}</span>'
            f"{where_html}</div>"
        )
        frame = frame_of(err, code)
        if frame is not None:
            out.append(f'<pre style="{_PRE}">{html.escape(frame.render())}</pre>')
        if err.stack:
            stack = _stack(err)
            out.append(
                f'<details><summary style="{_MUTED} cursor: pointer;">stack</summary>'
                f'<pre style="{_PRE}">{html.escape(stack)}</pre></details>'
            )
    advice = _hint(res, code)
    if advice:
        out.append(f'<div style="{_MUTED}">hint: {html.escape(advice)}</div>')
    if res.logs:
        n = len(res.logs)
        out.append(f'<div style="{_LABEL}">logs <span style="{_MUTED}">({n:,})</span></div>')
        rows = []
        for level, msg in _log_lines(res.logs):
            lc = _LEVEL_COLORS.get(level)
            style = f' style="color: {lc};"' if lc else ""
            rows.append(f"<span{style}>{html.escape(f'[{level}]'):<8}</span>{html.escape(msg)}")
        more = _logs_more(res.logs)
        if more:
            rows.append(f'<span style="{_MUTED}">{html.escape(more)}</span>')
        out.append(f'<pre style="{_PRE}">' + "\n".join(rows) + "</pre>")
    out.append(f'<div style="{_MUTED}">{html.escape(" · ".join(_stats_parts(res.stats)))}</div>')
    out.append("</div>")
    return "\n".join(out)


# -- Markdown


def run_result_markdown(
    res: _Shown, code: str | None = None, *, max_value_chars: int = MAX_VALUE_CHARS
) -> str:
    """The RunResult as Markdown (for Jupyter's ``_repr_markdown_``): the same content as
    `run_result_html`, every piece of the result in a code fence it cannot close or
    backslash-escaped, so it can become neither markup nor HTML."""
    err = res.error
    parts: list[str] = []
    stats = " · ".join(_stats_parts(res.stats))
    if res.ok or err is None:
        parts.append(f"**✓ ok** · {_md_inline(stats)}")
        parts.append(_md_fence(value_text(res.value, max_value_chars), "json"))
    else:
        at = f" at {_md_inline(where(err))}" if where(err) else ""
        parts.append(f"**✗ {_md_inline(err.kind)}**{at} · {_md_inline(stats)}")
        body = _error_head(err)
        frame = frame_of(err, code)
        if frame is not None:
            body += "\n\n" + frame.render()
        parts.append(_md_fence(body, "text"))
        if err.stack:
            parts.append("stack:\n\n" + _md_fence(_stack(err), "text"))
    advice = _hint(res, code)
    if advice:
        parts.append(f"hint: {_md_inline(advice)}")
    if res.logs:
        parts.append(f"logs ({len(res.logs):,}):\n\n" + _md_fence(_logs_plain(res.logs), "text"))
    return "\n\n".join(parts) + "\n"


def _logs_plain(logs: Sequence[_Log]) -> str:
    rows = [f"{f'[{level}]':<8}{msg}" for level, msg in _log_lines(logs)]
    more = _logs_more(logs)
    if more:
        rows.append(more)
    return "\n".join(rows)


# -- plain text


def run_result_text(
    res: _Shown, code: str | None = None, *, max_value_chars: int = MAX_VALUE_CHARS
) -> str:
    """The RunResult as plain text (for a terminal): the same content as the others."""
    err = res.error
    stats = " · ".join(_stats_parts(res.stats))
    parts: list[str] = []
    if res.ok or err is None:
        parts.append(f"ok · {stats}")
        parts.append(value_text(res.value, max_value_chars))
    else:
        at = f" at {where(err)}" if where(err) else ""
        parts.append(visible(f"error: {err.kind}{at} · {stats}"))
        parts.append(_error_head(err))
        frame = frame_of(err, code)
        if frame is not None:
            parts.append(frame.render())
    advice = _hint(res, code)
    if advice:
        parts.append(f"hint: {advice}")
    if res.logs:
        parts.append(f"logs ({len(res.logs):,}):\n" + _logs_plain(res.logs))
    return "\n".join(parts)
