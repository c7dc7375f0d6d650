"""``[mcp.NAME]`` tables in sandbox.toml: MCP servers' tools as bindings in `clambot run`,
`check` and `manifest` (real server processes: tests/mcp_server.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp_helpers import PATIENCE_S, SERVER, alive, children, wait_until
from mcp_serving import clambot_mcp, write_config

from clambot_tools.cli import main


def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_run_calls_the_servers_tools_and_the_server_exits_with_the_command(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "[limits]\ntimeout_s = 10\n")
    before = set(children())
    code, out, err = cli(
        "run", "-", "--config", str(config),
        stdin="const w = await tools.lookup({city: 'Oslo'}); [w.city, w.temp_c]",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["value"] == ["Oslo", 22.5]
    started = set(children()) - before
    assert wait_until(lambda: not any(alive(pid) for pid in started))


def test_writes_are_denied_without_a_terminal(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out, _ = cli(
        "run", "-", "--config", str(config), stdin="await tools.add_note({text: 'x'})"
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert error["kind"] == "binding_denied" and "add_note" in error["message"]


def test_check_lists_the_servers_tools(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + 'tools = ["lookup", "add_note"]\nprefix = "n_"\n')
    code, out, err = cli("check", str(config))
    assert code == 0, err
    assert "tools (2):" in out
    assert "n_lookup(args: {" in out and "n_add_note(args: { text: string })" in out


def test_relative_paths_are_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "server.py").write_text(
        f"import runpy\nrunpy.run_path({SERVER!r}, run_name='__main__')\n"
    )
    config = write_config(tmp_path / "conf", notes=False)
    config.write_text(f'[mcp.local]\ncommand = "{sys.executable}"\nargs = ["server.py"]\n')
    monkeypatch.chdir(tmp_path)  # not the config's directory
    code, out, err = cli(
        "run", "-", "--config", str(config), stdin="(await tools.echo({text: 'here'}))"
    )
    assert code == 0, err + out
    assert json.loads(out)["value"] == "here"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            '[mcp.remote]\nurl = "ftp://example.com/mcp"\n',
            "mcp.remote: url must be an http(s) URL",
        ),
        ('[mcp.both]\ncommand = "x"\nurl = "http://example.com/mcp"\n', "mcp.both: give either"),
        ('[mcp.typo]\ncomand = "x"\n', "mcp.typo.comand: Extra inputs"),
        ('[mcp.bad]\ncommand = "x"\nheaders.A = "b"\n', "headers are for a url"),
    ],
)
def test_a_bad_table_is_named_before_anything_starts(
    tmp_path: Path, table: str, message: str
) -> None:
    config = tmp_path / "sandbox.toml"
    config.write_text(table)
    before = set(children())
    code, _, err = cli("check", str(config))
    assert code == 2 and message in err, err
    assert set(children()) == before


def test_a_missing_secret_is_named(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    config.write_text(
        '[mcp.remote]\nurl = "http://127.0.0.1:9/mcp"\n'
        'headers.Authorization = { env = "CLAMBOT_NO_SUCH_TOKEN", prefix = "Bearer " }\n'
    )
    code, _, err = cli("check", str(config))
    assert code == 2 and "CLAMBOT_NO_SUCH_TOKEN (a secret) is not set" in err


def test_a_server_that_does_not_start_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    config.write_text('[mcp.gone]\ncommand = "/nonexistent/mcp-server"\nconnect_attempts = 1\n')
    code, _, err = cli("run", "-", "--config", str(config), stdin="1")
    assert code == 2 and "cannot connect to the MCP server 'gone'" in err


# -- the binding manifest


def test_the_lock_records_the_server_and_catches_a_changed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_TEST_KEY", "s3cret-value-for-the-test")
    config = write_config(tmp_path)
    config.write_text(
        config.read_text()
        + 'env.API_KEY = { env = "CLAMBOT_TEST_KEY" }\nenv.MODE = "literal-s3cret"\n'
    )
    code, out, err = cli("manifest", "lock", "--config", str(config))
    assert code == 0, err
    lock = (tmp_path / "bindings.lock").read_text()
    assert "s3cret" not in lock  # secrets by reference, literal values not at all
    origin = json.loads(lock)["bindings"]["lookup"]["origin"]
    assert origin == {
        "mcp": "notes",
        "command": sys.executable,
        "args": [SERVER],
        "env": {"API_KEY": {"env": "CLAMBOT_TEST_KEY"}, "MODE": "<written in the config>"},
        "tool": "lookup",
    }
    assert cli("manifest", "check", "--config", str(config))[0] == 0
    assert cli("run", "-", "--config", str(config), stdin="1")[0] == 0
    # the server is now reached differently: every one of its tools differs
    config.write_text(config.read_text().replace("args = [", 'cwd = "."\nargs = ['))
    code, out, _ = cli("manifest", "check", "--config", str(config))
    assert code == 1 and "lookup: origin" in out and "cwd" in out
    code, _, err = cli("run", "-", "--config", str(config), stdin="1")
    assert code == 2 and "lookup: origin" in err


def test_http_secrets_take_the_same_env_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAMBOT_TEST_API_TOKEN", "t0ken")
    config = tmp_path / "sandbox.toml"
    config.write_text(
        '[http]\nallow_hosts = ["api.example.com"]\n[http.secrets."api.example.com"]\n'
        'Authorization = { env = "CLAMBOT_TEST_API_TOKEN", prefix = "Bearer " }\n'
    )
    assert cli("manifest", "lock", "--config", str(config))[0] == 0
    lock = json.loads((tmp_path / "bindings.lock").read_text())
    secrets = lock["bindings"]["http_fetch"]["origin"]["secrets"]
    assert secrets == {
        "api.example.com": {"Authorization": {"env": "CLAMBOT_TEST_API_TOKEN", "prefix": "Bearer "}}
    }
    monkeypatch.delenv("CLAMBOT_TEST_API_TOKEN")
    code, _, err = cli("check", str(config))
    assert code == 2 and "CLAMBOT_TEST_API_TOKEN (a secret) is not set" in err


def test_clambot_mcp_refuses_to_serve_bindings_that_differ_from_the_lock(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli("manifest", "lock", "--config", str(config))[0] == 0
    config.write_text(config.read_text() + 'tools = ["lookup"]\n')
    done = subprocess.run(
        clambot_mcp("--config", str(config)),
        stdin=subprocess.DEVNULL,  # were it to serve, it would end at once
        capture_output=True,
        text=True,
        timeout=PATIENCE_S * 2,
        check=False,
    )
    assert done.returncode == 2
    assert "echo: removed" in done.stderr and "lookup: origin" in done.stderr
    assert done.stdout == ""  # nothing was served


def test_without_the_mcp_package_the_commands_say_how_to_install_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    probe = (
        "import sys; sys.modules['mcp'] = None\n"  # as if the package were not installed
        "from clambot_tools.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for args in (["mcp"], ["check", str(config)]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PATIENCE_S,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "pip install 'clambot-tools[mcp]'" in done.stderr
