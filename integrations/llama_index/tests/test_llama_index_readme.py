"""The README's quickstart runs as written and prints what its comments say."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs_and_prints_what_it_says() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    quickstart = blocks[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(quickstart, str(README), "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    assert "JavaScript, not Python" in printed
    assert 'Result (JSON): {"usd":50,"items":3}\n' in printed
    assert "RunResult(ok, value={'usd': 50, 'items': 3}, logs=0)\n" in printed
    # the error text shown in the comments, line for line (the hint is abridged there)
    shown = [
        ln[2:]
        for ln in quickstart.splitlines()
        if ln.startswith("# ") and not ln.startswith("# Hint")
    ]
    error_lines = shown[shown.index(next(ln for ln in shown if ln.startswith("Error ("))) :]
    assert "\n".join(error_lines) in printed


def test_readme_policy_and_short_description_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    scope: dict[str, object] = {"__name__": "readme"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[0], str(README), "exec"), scope)
    exec(compile(blocks[2], str(README), "exec"), scope)
    from llama_index.core.llms.mock import MockFunctionCallingLLM

    scope["llm"] = MockFunctionCallingLLM()
    exec(compile(blocks[3], str(README), "exec"), scope)
    spec = scope["spec"]
    run = spec.run_js_sandboxed  # type: ignore[attr-defined]
    assert run("await tools.refund({order_id: 'A', amount_eur: 20})").value == {"refunded": 20}
    assert run("await tools.refund({order_id: 'A', amount_eur: 90})").error.kind == (
        "binding_denied"
    )
    agent = scope["agent"]
    assert "refund(args: {" in str(agent.system_prompt)  # type: ignore[attr-defined]
    assert len(agent.tools[0].metadata.description) <= 1024  # type: ignore[attr-defined]
