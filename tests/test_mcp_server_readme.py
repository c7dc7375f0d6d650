"""The README's `clambot mcp` example, run as a user would copy it: its sandbox.toml
beside the MCP section's weather server, its client configuration's command, its
script; the user approves the write."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mcp_serving import Client, accept, stdio

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readme_example_serves_the_weather_tools_and_asks_before_the_write(
    tmp_path: Path,
) -> None:
    readme = README.read_text(encoding="utf-8")
    mcp_section = readme[readme.index("\n## MCP\n") : readme.index("\n## Command line\n")]
    ours = readme[readme.index("\n## The sandbox as an MCP server") :]
    ours = ours[: ours.index("\n## ", 1)]
    (tmp_path / "weather_server.py").write_text(blocks(mcp_section, "python")[0])
    toml = blocks(ours, "toml")[0]
    # the one adaptation: this interpreter, wherever `python` is on this machine
    (tmp_path / "sandbox.toml").write_text(
        toml.replace('command = "python"', f"command = {json.dumps(sys.executable)}")
    )
    entry = json.loads(blocks(ours, "json")[0])["mcpServers"]["clambot"]
    assert entry["command"] == "clambot"
    args = [a.replace("/absolute/path/to/sandbox.toml", str(tmp_path / "sandbox.toml"))
            for a in entry["args"]]  # fmt: skip
    assert args[0] == "mcp"
    (script,) = blocks(ours, "js")

    c = Client(stdio(*args[1:]))
    try:
        c.answer = accept()
        (tool,) = c.tools()
        assert "forecast(args: { city: string }): Promise<{ city: string; temp_c: number }>;" in (
            tool.description or ""
        )
        res = c.call(script)
        assert res.is_error is False
        assert res.structured_content is not None and res.structured_content["value"] == ["Paris"]
        (asked,) = c.asked
        assert "tools.save_note" in asked and '"text": "Paris 21.5, Oslo 12"' in asked
    finally:
        c.close()
