"""The README's quickstart runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs_and_prints_what_it_says() -> None:
    text = README.read_text(encoding="utf-8")
    quickstart = re.findall(r"````python\n(.*?)````", text, re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quickstart, str(README), "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    assert 'Result (JSON): [{"city":"Paris","temp_c":21.5,"people":2100000}' in printed
    assert "Console output:\n2 cities" in printed
    assert "\nerror\n" in printed
    assert "Error (runtime): TypeError: cannot read property 'speed' of undefined" in printed
    assert "> 2 | w.wind.speed" in printed


def test_readme_error_text_is_what_the_model_reads() -> None:
    text = README.read_text(encoding="utf-8")
    quickstart = re.findall(r"````python\n(.*?)````", text, re.S)[0]
    scope: dict[str, object] = {"__name__": "readme"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(quickstart, str(README), "exec"), scope)
    shown = re.search(r"```\n(Error \(binding_failed\).*?)\n```", text, re.S)
    assert shown is not None
    js = scope["js"]
    msg = js.invoke(  # type: ignore[attr-defined]
        {
            "type": "tool_call",
            "id": "1",
            "name": "run_js_sandboxed",
            "args": {"code": "const w = await tools.get_weather({town: 'Oslo'});\nw.temp_c"},
        }
    )
    assert msg.content == shown.group(1)
