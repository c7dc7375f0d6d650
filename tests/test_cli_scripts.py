"""`clambot scripts`: list, show, run and save saved scripts from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from clambot_tools import ScriptLibrary
from clambot_tools.cli import main


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cli(argv: list[str], stdin: str = "", tty: bool = False) -> tuple[int, str, str]:
    out, err = (_Tty() if tty else io.StringIO()), io.StringIO()
    inp = _Tty(stdin) if tty else io.StringIO(stdin)
    code = main(argv, stdin=inp, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


SCHEMA = '{"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}'


def _save(
    lib: Path, script: Path, *extra: str, tty: bool = False, stdin: str = ""
) -> tuple[int, str, str]:
    argv = ["scripts", "save", "doubler", str(script), "--dir", str(lib)]
    argv += ["--description", "Doubles n", "--schema", SCHEMA, *extra]
    return _cli(argv, stdin=stdin, tty=tty)


def test_save_asks_and_yes_approves(tmp_path: Path) -> None:
    script = tmp_path / "dbl.js"
    script.write_text("({double: args.n * 2})\n")
    lib = tmp_path / "scripts"
    code, _, err = _save(lib, script)  # no terminal: nobody to ask
    assert code == 2 and "not approved" in err and "pass --yes" in err
    code, _, err = _save(lib, script, tty=True, stdin="n\n")
    assert code == 2 and "tools.save_script (write)" in err and "({double: args.n * 2})" in err
    assert ScriptLibrary(lib).names() == []
    code, out, _ = _save(lib, script, tty=True, stdin="y\n")
    assert code == 0 and out.startswith("saved doubler@1 (")
    script.write_text("({double: args.n + args.n})\n")
    code, out, _ = _save(lib, script, "--yes")
    assert code == 0 and "doubler@2" in out
    assert [s.number for s in ScriptLibrary(lib).versions("doubler")] == [1, 2]


def test_list_show_and_run(tmp_path: Path) -> None:
    script = tmp_path / "dbl.js"
    script.write_text("({double: args.n * 2})\n")
    lib = tmp_path / "scripts"
    assert _save(lib, script, "--yes")[0] == 0
    code, out, _ = _cli(["scripts", "list", "--dir", str(lib)])
    [entry] = json.loads(out)
    assert code == 0 and (entry["name"], entry["number"]) == ("doubler", 1)
    code, out, _ = _cli(["scripts", "list", "--dir", str(lib)], tty=True)
    assert code == 0 and out.startswith("doubler@1  ") and "Doubles n" in out
    code, out, _ = _cli(["scripts", "show", "doubler@1", "--dir", str(lib)])
    shown = json.loads(out)
    assert shown["source"] == "({double: args.n * 2})\n" and shown["versions"] == [1]
    code, out, _ = _cli(["scripts", "run", "doubler", '{"n": 21}', "--dir", str(lib)])
    assert code == 0 and json.loads(out)["value"] == {"double": 42}
    code, _, err = _cli(["scripts", "run", "doubler", '{"n": "x"}', "--dir", str(lib)])
    assert code == 2 and "invalid arguments for script doubler: n: must be number" in err
    code, _, err = _cli(["scripts", "run", "nope", "--dir", str(lib)])
    assert code == 2 and "no saved script is named 'nope'; saved: doubler" in err
    code, out, _ = _cli(["scripts", "run", "doubler", '{"n": 1}', "--dir", str(lib)], tty=True)
    assert code == 0 and '"double": 2' in out


def test_the_config_names_the_library_and_the_tools(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "n.txt").write_text("20")
    cfg = tmp_path / "sandbox.toml"
    cfg.write_text(
        '[files]\nroot = "data"\n[scripts]\ndatabase = "lib.db"\n[limits]\ntimeout_s = 2\n'
    )
    script = tmp_path / "read.js"
    script.write_text("Number(await tools.fs_read_text({path: args.file})) + 1\n")
    argv = ["scripts", "save", "reader", str(script), "-c", str(cfg), "-d", "Reads a number"]
    argv += [
        "-b",
        "fs_read_text",
        "--schema",
        '{"type": "object", "properties": {"file": {"type": "string"}}}',
    ]
    code, out, err = _cli([*argv, "--yes"])
    assert code == 0, err
    assert (tmp_path / "lib.db").exists()
    code, out, _ = _cli(["scripts", "run", "reader", '{"file": "n.txt"}', "-c", str(cfg)])
    assert code == 0 and json.loads(out)["value"] == 21
    # a script failing at run time exits 1 with its error
    code, out, _ = _cli(["scripts", "run", "reader", '{"file": "none.txt"}', "-c", str(cfg)])
    assert code == 1 and json.loads(out)["error"]["kind"] == "binding_failed"
    code, _, err = _cli(["scripts", "list", "--dir", str(tmp_path / "x"), "--db", "y"])
    assert code == 2 and "not allowed with" in err
