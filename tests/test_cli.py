"""The `clambot` command: run and check, configured by sandbox.toml."""

from __future__ import annotations

import io
import json
import re
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
    assert "[warn]  careful" in out and '"a": 1' in out and "tool calls" in out


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


# -- what reaches the operator's terminal


class _TtyBytes(io.TextIOWrapper):
    """A terminal as Python opens one: text over bytes, strict in its encoding."""

    def __init__(self, encoding: str = "utf-8") -> None:
        super().__init__(io.BytesIO(), encoding=encoding, errors="strict", write_through=True)

    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        buf = self.buffer
        assert isinstance(buf, io.BytesIO)
        return buf.getvalue().decode(self.encoding)


class _PipeBytes(_TtyBytes):
    def isatty(self) -> bool:
        return False


def _run_real(
    argv: list[str], *, tty: bool = True, encoding: str = "utf-8"
) -> tuple[int, str, str]:
    """main() on streams that encode strictly, as a real terminal or pipe does."""
    out = _TtyBytes(encoding) if tty else _PipeBytes(encoding)
    err = _TtyBytes(encoding)
    code = main(argv, stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.text(), err.text()


# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), bidi
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

HOSTILE_JS = r"""
console.log('title \x1b]0;pwned\x07 clear \x1b[2J\x1b[H csi \x9b31m link \x1b]8;;http://x\x1b\\y');
console.error('bidi \u202eevil\u202c bell \x07 cr \roverwrite');
const e = new Error('msg \x1b[31mred\x1b[0m \x1b]52;c;Y29weQ==\x07');
e.name = 'Name\x1b[1m';
if (globalThis.fail) throw e;
({text: 'v \x1b]0;t\x07 \u202e', [`k\x1b[2J`]: 1})
"""


def test_escape_sequences_from_a_script_never_reach_the_terminal(tmp_path: Path) -> None:
    script = tmp_path / "s.js"
    for prelude in ("", "globalThis.fail = true;"):
        script.write_text(prelude + HOSTILE_JS)
        for extra in ([], ["--json"]):
            code, out, err = _run_real(["run", str(script), *extra])
            assert code == (1 if prelude else 0)
            assert not _RAW.search(out), out
            assert not _RAW.search(err), err
            if extra:  # JSON on the terminal: escaped, and still the exact strings
                res = json.loads(out)
                assert "\x1b]0;pwned\x07" in res["logs"][0]["message"]
                if prelude:
                    assert res["error"]["name"] == "Name\x1b[1m"
                else:
                    assert res["value"]["text"] == "v \x1b]0;t\x07 \u202e"
            else:  # readable: shown as escapes, so the operator sees what was sent
                assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out
                assert ("Name\\x1b[1m" in out) == bool(prelude)


def test_lone_surrogates_are_written_as_u_fffd_and_said(tmp_path: Path) -> None:
    script = tmp_path / "s.js"
    script.write_text("({s: 'a\\ud800b', k: ['\\udfff']})")
    for tty in (True, False):
        code, out, err = _run_real(["run", str(script), "--json"], tty=tty)
        assert code == 0
        assert json.loads(out.encode("utf-8"))["value"] == {"s": "a\ufffdb", "k": ["\ufffd"]}
        assert "2 lone surrogate(s)" in err and "U+FFFD" in err
    code, out, err = _run_real(["run", str(script)])  # readable: an escape that says so
    assert code == 0 and '"a\\ud800b"' in out


def test_deeply_nested_results_print_in_both_forms(tmp_path: Path) -> None:
    script = tmp_path / "s.js"
    # deeper than pydantic serialises (~250); the core's own depth limits are its matter
    script.write_text("let a = [1]; for (let i = 0; i < 600; i++) a = [a]; a")
    code, out, _ = _run_real(["run", str(script), "--json"], tty=False)
    assert code == 0 and out.count("[") == 602 and out.count("]") == 602  # and "logs": []
    assert '"ok": true' in out
    code, out, _ = _run_real(["run", str(script)])
    assert code == 0 and out.startswith("ok")


def test_output_on_an_ascii_only_terminal_still_encodes(tmp_path: Path) -> None:
    script = tmp_path / "s.js"
    script.write_text("console.log('caf\\u00e9 \\u2603'); ({city: 'Z\\u00fcrich \\u{1F600}'})")
    code, out, _ = _run_real(["run", str(script)], encoding="ascii")
    assert code == 0 and "Z\\xfcrich" in out
    code, out, _ = _run_real(["run", str(script), "--json"], encoding="ascii")
    assert code == 0 and json.loads(out)["value"] == {"city": "Z\u00fcrich \U0001f600"}


def test_messages_about_arguments_never_echo_escapes(tmp_path: Path) -> None:
    name = str(tmp_path / "missing\x1b]0;pwned\x07\x1b[2J.js")
    code, _, err = _run_real(["run", name])
    assert code == 2 and "cannot read" in err
    assert not _RAW.search(err) and "\\x1b]0;pwned\\x07" in err


def test_script_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "latin1.js"
    script.write_bytes(b"'caf\xe9'")
    code, _, err = _run_real(["run", str(script)])
    assert code == 2 and "not UTF-8" in err and "byte 4" in err


def test_a_vanished_reader_ends_quietly() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    code = main(["run", "-"], stdin=io.StringIO("1"), stdout=Gone(), stderr=err)
    assert code == 1 and err.getvalue() == ""


# -- approval on the terminal


def _write_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text(f'[files]\nroot = "data"\nwrite = true\n{extra}')
    return cfg


def test_the_approval_question_shows_the_whole_arguments(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    script = tmp_path / "w.js"
    # the text that matters comes after 3,000 harmless characters
    script.write_text(
        "await tools.fs_write_text({path: 'a.txt', "
        "text: 'x'.repeat(3000) + ' AND THE REAL PAYLOAD \\x1b]0;t\\x07'}); 1"
    )
    code, _, err = _run(["run", str(script), "--config", str(cfg)], stdin="n\n", tty=True)
    assert code == 1 and "AND THE REAL PAYLOAD" in err
    assert not _RAW.search(err.replace("\n", ""))


def test_arguments_too_long_to_review_are_refused_without_asking(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    script = tmp_path / "w.js"
    script.write_text("await tools.fs_write_text({path: 'a.txt', text: 'x'.repeat(50000)}); 1")
    code, out, err = _run(["run", str(script), "--config", str(cfg), "--json"], "y\n", tty=True)
    assert code == 1 and "too long to review" in err and "Allow?" not in err
    assert json.loads(out)["error"]["kind"] == "binding_denied"
    assert not (tmp_path / "data" / "a.txt").exists()


def test_a_late_answer_never_lets_a_write_run(tmp_path: Path) -> None:
    """The run times out while the question waits: the result is printed and the process
    ends without waiting for an answer, so a "y" typed afterwards can never write."""
    import os
    import pty
    import select

    cfg = _write_config(tmp_path, "[limits]\ntimeout_s = 0.5\n")
    script = tmp_path / "w.js"
    script.write_text("await tools.fs_write_text({path: 'late.txt', text: 'x'}); 1")
    exe = Path(sys.executable).with_name("clambot")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(exe), "run", str(script), "--config", str(cfg)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    try:
        while b"timeout" not in seen and b"binding_denied" not in seen:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no result printed: {seen!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert b"Allow?" in seen and (b"timeout" in seen or b"binding_denied" in seen)
        # the question is over with the run: the process ends without waiting for input
        assert proc.wait(timeout=60) == 1
        try:
            os.write(master, b"y\n")  # the operator answers anyway: nobody reads it
        except OSError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert not (tmp_path / "data" / "late.txt").exists()
    assert b"\x1b" not in seen
