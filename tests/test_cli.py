"""The `clambot` command: run and check, configured by sandbox.toml."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from clambot_tools.cli import main


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(argv: list[str], stdin: str = "", tty: bool = False) -> tuple[int, str, str]:
    out, err = (_Tty() if tty else io.StringIO()), io.StringIO()
    inp = _Tty(stdin) if tty else io.StringIO(stdin)
    code = main(argv, stdin=inp, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_run_from_stdin_prints_json_and_exits_zero() -> None:
    code, out, _ = _run(["run", "-"], stdin="console.log('hi'); [1, 2].map(x => x * 3)")
    assert code == 0
    res = json.loads(out)
    assert res["ok"] is True and res["value"] == [3, 6]
    assert res["logs"] == [{"level": "log", "message": "hi"}]


def test_failing_script_exits_one_with_the_error(tmp_path: Path) -> None:
    script = tmp_path / "bad.js"
    script.write_text("const a = 1;\nnull.x\n")
    code, out, _ = _run(["run", str(script)])
    assert code == 1
    err = json.loads(out)["error"]
    assert (err["kind"], err["line"]) == ("runtime", 2)


def test_terminal_output_is_readable(tmp_path: Path) -> None:
    script = tmp_path / "s.js"
    script.write_text("console.warn('careful'); ({a: 1})")
    code, out, _ = _run(["run", str(script)], tty=True)
    assert code == 0
    assert "[warn] careful" in out and '"a": 1' in out and "tool calls" in out


def test_config_sets_limits_and_policy(tmp_path: Path) -> None:
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text("[limits]\ntimeout_s = 0.3\nmemory_mb = 16\n[policy]\nmax_calls = 5\n")
    code, out, _ = _run(["run", "-", "--config", str(cfg)], stdin="while (true) {}")
    assert code == 1
    assert json.loads(out)["error"]["kind"] == "timeout"


def test_check_validates_and_lists_tools(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text('[files]\nroot = "data"\n')
    code, out, _ = _run(["check", str(cfg)])
    assert code == 0 and "OK" in out and "fs_read_text(" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\ntimeout = 2\n[nope]\nx = 1\n")
    code, _, err = _run(["check", str(bad)])
    assert code == 2 and "timeout" in err and "nope" in err


def test_write_bindings_ask_on_a_terminal_and_yes_approves(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text('[files]\nroot = "data"\nwrite = true\n')
    script = tmp_path / "w.js"
    script.write_text("await tools.fs_write_text({path: 'out.txt', text: 'hello'}); 'ok'")
    code, out, err = _run(
        ["run", str(script), "--config", str(cfg), "--json"], stdin="n\n", tty=True
    )
    assert code == 1 and "fs_write_text" in err and not (root / "out.txt").exists()
    assert json.loads(out)["error"]["kind"] == "binding_denied"
    code, out, _ = _run(["run", str(script), "--config", str(cfg), "--json"], stdin="y\n", tty=True)
    assert code == 0 and (root / "out.txt").read_text() == "hello"
    (root / "out.txt").unlink()
    code, _, _ = _run(["run", str(script), "--config", str(cfg), "--yes"])
    assert code == 0 and (root / "out.txt").read_text() == "hello"


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("clambot")
    proc = subprocess.run(
        [str(exe), "run", "-"], input="6 * 7", capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["value"] == 42


def test_usage_errors_exit_two() -> None:
    assert _run(["run"])[0] == 2
    assert _run(["run", "/nonexistent.js"])[0] == 2
