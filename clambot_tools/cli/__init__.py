"""The `clambot` command: run scripts, check configs, report on audit logs, pin bindings.

    clambot run script.js --config sandbox.toml     # `-` reads the script from stdin
    clambot check sandbox.toml                      # validate; list the granted tools
    clambot report audit.jsonl [--since 24h] [--check --config sandbox.toml] [--json]
    clambot manifest lock|check|sign|keygen ...     # the binding manifest (bindings.lock)
    clambot mcp --config sandbox.toml [--http 127.0.0.1:8765]   # serve run_js_sandboxed
    clambot scripts list|show|run|save ...          # saved scripts (see cli/_scripts.py)

`run` prints the RunResult as JSON (or a readable form on a terminal; `--json` forces
JSON) and exits 0 when the script succeeded, 1 when it failed, 2 on a usage or config
error. Calls to write bindings ask on the terminal; `--yes` approves them all, and
without a terminal they are denied.

`mcp` serves the sandbox as an MCP server (one tool, ``run_js_sandboxed``) over stdio,
or over streamable HTTP with ``--http``: on loopback unless ``--allow-remote``, and
beyond it only with a bearer token (``--token-env NAME``) unless
``--insecure-no-token``. Calls to write bindings ask the MCP client's user
(elicitation); a client that cannot ask gets them refused.

Nothing a script produces reaches the terminal raw: escape sequences, control and bidi
characters are shown as escapes, and the output always encodes (lone surrogates are
shown as escapes, or written as U+FFFD in JSON, and a note on stderr says so).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .._errors import ClamBotError, ConfigError
from .._policy import Approval, Approver
from ._terminal import Output, TerminalApprover, is_terminal

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["main"]


class _Usage(Exception):
    """A usage error argparse found (its message is already written)."""


class _Parser(argparse.ArgumentParser):
    """argparse writing to the command's own stderr, every message made visible."""

    err: Output

    out: Output

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self.err if file is sys.stderr else self.out).text(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.err.text(message)
        raise _Usage(status)


def _parser(out: Output, err: Output) -> _Parser:
    def make(*args: Any, **kw: Any) -> _Parser:
        p = _Parser(*args, **kw)
        p.out, p.err = out, err
        return p

    parser = make(prog="clambot", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, **kw: Any) -> _Parser:
        p: _Parser = sub.add_parser(name, **kw)
        p.out, p.err = out, err
        return p

    run = add("run", help="run a script in the sandbox")
    run.add_argument("script", help="path of a .js file, or - for stdin")
    run.add_argument("--config", "-c", help="sandbox.toml (limits, policy, tools)")
    run.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    run.add_argument("--yes", "-y", action="store_true", help="approve every write call")
    check = add("check", help="validate a sandbox.toml")
    check.add_argument("config")
    report = add("report", help="summarise an audit log (a canary's figures)")
    report.add_argument("audit", nargs="?", help="the audit log (default: [audit] path)")
    report.add_argument("--config", "-c", help="sandbox.toml ([rollout] thresholds, [audit])")
    report.add_argument("--since", help="only records since: 30m, 24h, 7d or an ISO date")
    report.add_argument(
        "--check", action="store_true", help="exit 1 when a [rollout] threshold is crossed"
    )
    report.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    manifest = add("manifest", help="pin the granted bindings in bindings.lock")
    msub = manifest.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, text in (
        ("lock", "write bindings.lock for the bindings the config grants"),
        ("check", "compare the granted bindings with bindings.lock (and its signature)"),
        ("sign", "sign bindings.lock with an Ed25519 private key (writes bindings.lock.sig)"),
    ):
        p = msub.add_parser(action, help=text)
        p.out, p.err = out, err
        p.add_argument("--config", "-c", required=True, help="sandbox.toml")
        if action == "sign":
            p.add_argument("--key", required=True, help="the private key (PEM, unencrypted)")
    keygen = msub.add_parser("keygen", help="make an Ed25519 key pair for signing")
    keygen.out, keygen.err = out, err
    keygen.add_argument("private_key", help="where to write the private key (PEM, mode 0600)")
    mcp = add("mcp", help="serve run_js_sandboxed as an MCP server (stdio, or --http)")
    mcp.add_argument("--config", "-c", help="sandbox.toml (limits, policy, tools, [mcp.NAME])")
    mcp.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp (host 127.0.0.1 by default; "
        "port 0 picks one) instead of stdio",
    )
    mcp.add_argument(
        "--sessions",
        action="store_true",
        help="keep each MCP session's JavaScript globals between its calls",
    )
    mcp.add_argument(
        "--token-env",
        metavar="NAME",
        help="require Authorization: Bearer $NAME on every HTTP request",
    )
    mcp.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --http on an address other machines can reach (needs a token)",
    )
    mcp.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="with --allow-remote: serve without a bearer token (anyone who can reach it)",
    )

    def make_sub(subparsers: Any, name: str, **kw: Any) -> _Parser:
        p: _Parser = subparsers.add_parser(name, **kw)
        p.out, p.err = out, err
        return p

    from ._scripts import add_parser as add_scripts

    add_scripts(sub, make_sub)
    return parser


def _read_script(name: str, stdin: TextIO) -> str:
    """The script's text. Raises ConfigError if it cannot be read or is not UTF-8."""
    try:
        if name == "-":
            buffer = getattr(stdin, "buffer", None)
            data = (
                buffer.read()
                if buffer is not None
                else stdin.read().encode("utf-8", "surrogatepass")
            )
        else:
            data = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start})") from None


def _sandbox(cfg: Config | None, approve: Approver | None) -> Any:
    from .. import Sandbox
    from ._config import build

    if cfg is None:
        return Sandbox()
    return Sandbox(**build(cfg, approve))


def _result_data(res: Any) -> dict[str, Any]:
    """The RunResult as data for JSON, its value as it is (any depth: pydantic's own
    dump stops at a depth a script can exceed)."""
    rest = res.model_dump(mode="python", exclude={"value"})
    return {k: res.value if k == "value" else rest[k] for k in type(res).model_fields}


def _cmd_run(args: argparse.Namespace, stdin: TextIO, out: Output, err: Output) -> int:
    code = _read_script(args.script, stdin)
    # with the script on stdin, nobody can answer a prompt there
    interactive = args.script != "-" and is_terminal(stdin)
    asker: TerminalApprover | None = None
    if args.yes:
        approve: Approver = lambda req: Approval.ALLOW_ONCE  # noqa: E731
    elif interactive:
        approve = asker = TerminalApprover(stdin, err)
    else:
        approve = lambda req: Approval.DENY  # noqa: E731
    from ._config import load_config

    cfg = load_config(args.config) if args.config else None
    try:
        sb = _sandbox(cfg, approve)
        if asker is not None:
            asker.start(sb.limits.timeout_s)
        try:
            res = sb.run(code)
        finally:
            if asker is not None:
                asker.close()
    finally:
        if cfg is not None:
            cfg.close()  # MCP servers it started exit now
    if args.json or not out.is_terminal:
        replaced = out.json(_result_data(res))
        if replaced:
            err.line(
                f"clambot: the result held {replaced:,} lone surrogate(s), which no UTF-8 "
                "text can hold; the JSON has U+FFFD in their place"
            )
    else:
        from .._display import run_result_text

        out.line(run_result_text(res, code))
    return 0 if res.ok else 1


def _cmd_check(args: argparse.Namespace, out: Output) -> int:
    from ._config import load_config

    cfg = load_config(args.config)
    try:
        return _check(cfg, args.config, out)
    finally:
        cfg.close()


def _check(cfg: Config, name: str, out: Output) -> int:
    from .. import Sandbox
    from .._manifest import check as check_manifest
    from ._config import build

    kwargs = build(cfg)
    manifest = kwargs.pop("manifest")
    sb = Sandbox(**kwargs)
    lim = sb.limits
    out.line(
        f"{name}: OK\n"
        f"limits: timeout {lim.timeout_s:g} s, memory {lim.memory_mb} MiB, "
        f"logs {lim.max_log_bytes} B, result {lim.max_result_bytes} B"
    )
    status = 0
    if manifest is not None:
        try:
            check_manifest(sb.bindings, manifest)
            out.line(
                f"manifest: {manifest.path} matches" + (" (signed)" if manifest.public_keys else "")
            )
        except ClamBotError as exc:
            out.line(f"manifest: {exc}")
            status = 1
    out.line(f"tools ({len(sb.bindings)}):")
    out.line(sb.describe_tools())
    return status


def _cmd_report(args: argparse.Namespace, out: Output) -> int:
    from ._config import load_config
    from ._report import Thresholds, parse_since, read_audit, render_text, to_json

    cfg = load_config(args.config) if args.config else None
    path = args.audit
    if path is None:
        if cfg is None or cfg.sections.audit is None:
            raise ConfigError("report: name the audit log, or give a --config with [audit] path")
        path = str(cfg.rel(cfg.sections.audit.path))
    thresholds = None
    if args.check:
        thresholds = Thresholds(**(cfg.sections.rollout.given() if cfg else {}))
    since = parse_since(args.since) if args.since else None
    try:
        rep = read_audit(path, since=since)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if args.json or not out.is_terminal:
        out.json(to_json(rep, thresholds))
    else:
        out.line(render_text(rep, thresholds))
    if thresholds is not None:
        from ._report import check

        return 0 if check(rep, thresholds).passed else 1
    return 0


def _cmd_manifest(args: argparse.Namespace, out: Output) -> int:
    from .. import _manifest as m

    if args.action == "keygen":
        pem, public = m.generate_key()
        target = Path(args.private_key)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot create {target}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        out.line(f"private key: {target} (keep it secret; sign with --key {target})")
        out.line(f"public key (for [manifest] public_key in sandbox.toml): {public}")
        return 0
    from ._config import load_config

    cfg = load_config(args.config)
    try:
        return _manifest_action(args, cfg, out)
    finally:
        cfg.close()


def _manifest_action(args: argparse.Namespace, cfg: Config, out: Output) -> int:
    from .. import _manifest as m
    from ._config import build_bindings, lock_path, public_keys

    lock = lock_path(cfg)
    if args.action == "sign":
        try:
            pem = Path(args.key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.key}: {exc.strerror}") from None
        sig, kid = m.sign(lock, pem)
        out.line(f"signed {lock} with key {kid}: {sig}")
        return 0
    bindings = build_bindings(cfg)
    if args.action == "lock":
        m.write_lock(bindings, lock)
        out.line(f"wrote {lock}: {len(bindings)} binding(s)")
        for b in bindings:
            out.line(f"  {b.name} ({', '.join(b.effects)})")
        return 0
    keys = public_keys(cfg)
    try:
        if keys:
            kid = m.verify_signature(lock, keys)
            out.line(f"{lock}: signed by key {kid}")
        drift = m.compare(m.read_lock(lock), bindings)
    except ClamBotError as exc:  # no lock, not a lock, a bad signature: it does not hold
        out.line(f"clambot: {exc}")
        return 1
    if not drift:
        out.line(f"{lock}: the {len(bindings)} granted binding(s) match")
        return 0
    out.line(f"{lock}: {len(drift)} difference(s) from the granted bindings:")
    for d in drift:
        out.line(f"  {d}")
    return 1


def _cmd_mcp(args: argparse.Namespace, err: Output) -> int:
    from ._config import require_mcp

    require_mcp("clambot mcp")
    from .._mcp_listen import check_exposure, parse_listen, read_token

    # every flag is checked before any MCP server of the config is started
    token = read_token(args.token_env) if args.token_env else None
    if args.http is None:
        if token is not None or args.allow_remote or args.insecure_no_token:
            raise ConfigError("--token-env, --allow-remote and --insecure-no-token are for --http")
        address = None
    else:
        address = parse_listen(args.http)
        check_exposure(
            address[0],
            token=token,
            allow_remote=args.allow_remote,
            no_token=args.insecure_no_token,
        )
    from ._config import load_config

    cfg = load_config(args.config) if args.config else None
    try:
        with _terminate_ends_normally():
            return _serve_mcp(cfg, args.sessions, address, token, err)
    except _Terminated:
        if address is None:
            # the SDK reads stdin on a worker thread that stays blocked in read() and
            # would hold the interpreter's exit until the client closes stdin
            if cfg is not None:
                cfg.close()
            err.flush()
            os._exit(0)
        return 0
    finally:
        if cfg is not None:
            cfg.close()  # the MCP servers it fronts exit with it


class _Terminated(SystemExit):
    """SIGTERM arrived: stop serving and end normally (the MCP servers it started are
    closed on the way out). A SystemExit, because asyncio lets only those (and
    KeyboardInterrupt) out of a task that happens to be running when it is raised."""


@contextlib.contextmanager
def _terminate_ends_normally() -> Iterator[None]:
    """Turn SIGTERM into `_Terminated` (in the main thread): a service manager's stop
    then unwinds the command like a return, instead of killing it midway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve_mcp(
    cfg: Config | None,
    sessions: bool,
    address: tuple[str, int] | None,
    token: str | None,
    err: Output,
) -> int:
    import anyio

    from .._manifest import check as check_manifest
    from .._mcp_listen import serve_http, serve_stdio
    from .._mcp_server import TOOL_NAME, SandboxServer
    from ._config import build

    kwargs: dict[str, Any] = build(cfg) if cfg is not None else {}
    manifest = kwargs.pop("manifest", None)
    if manifest is not None:
        check_manifest(kwargs["bindings"], manifest)
    server = SandboxServer(**kwargs, sessions=sessions)
    tools = len(kwargs.get("bindings", ()))
    about = f"{TOOL_NAME} ({tools} tool(s), sessions {'on' if sessions else 'off'})"
    if address is None:
        err.line(f"clambot mcp: serving {about} over stdio")
        err.flush()
        anyio.run(serve_stdio, server.server)
        return 0

    def listening(url: str) -> None:
        auth = "a bearer token required" if token is not None else "no token"
        err.line(f"clambot mcp: serving {about} at {url} ({auth})")
        err.flush()

    host, port = address
    anyio.run(
        lambda: serve_http(server.server, host=host, port=port, token=token, on_listening=listening)
    )
    return 0


def main(
    argv: list[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of `clambot`; returns the exit status: 0 ok, 1 the script failed (or a
    report check or manifest check found a problem), 2 a usage or config error, 130
    interrupted. Never raises."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    out, err = Output(stdout), Output(stderr)
    try:
        try:
            args = _parser(out, err).parse_args(argv)
        except _Usage as exc:
            return 0 if exc.args[0] in (0, None) else 2
        if args.command == "run":
            status = _cmd_run(args, stdin, out, err)
        elif args.command == "check":
            status = _cmd_check(args, out)
        elif args.command == "report":
            status = _cmd_report(args, out)
        elif args.command == "mcp":
            status = _cmd_mcp(args, err)
        elif args.command == "scripts":
            from ._scripts import command as scripts_command

            status = scripts_command(
                args, stdin, out, err, read_script=_read_script, result_data=_result_data
            )
        else:
            status = _cmd_manifest(args, out)
        out.flush()
        return status
    except ClamBotError as exc:
        err.line(f"clambot: {exc}")
        return 2
    except ImportError as exc:  # an optional dependency (httpx for [http], cryptography)
        err.line(f"clambot: {exc}")
        return 2
    except KeyboardInterrupt:
        err.line("clambot: interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (`clambot report ... | head`): say nothing more to it
        _silence(stdout)
        return 1
    except Exception as exc:  # noqa: BLE001 - the command never ends in a traceback
        err.line(f"clambot: internal error: {type(exc).__name__}: {exc}")
        return 2


def _silence(stream: TextIO) -> None:
    """Point a broken stdout at /dev/null, so the interpreter's last flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass
