"""The README's saved-scripts example runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_saved_scripts_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Saved scripts", 1)[1]
    source = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
    assert out.getvalue().splitlines() == [
        "monthly_revenue@1",
        "{'month': '2024-03', 'total': 42.5}",
    ]
