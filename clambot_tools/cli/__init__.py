"""The `clambot` command: run a script in a sandbox configured by a TOML file.

    clambot run script.js --config sandbox.toml     # `-` reads the script from stdin
    clambot check sandbox.toml                      # validate; list the granted tools

`run` prints the RunResult as JSON (or a readable form on a terminal; `--json` forces
JSON) and exits 0 when the script succeeded, 1 when it failed, 2 on a usage or config
error. Calls to write bindings ask on the terminal; `--yes` approves them all, and
without a terminal they are denied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ._errors import ClamBotError
from ._policy import Approval, ApprovalRequest, Approver


def _terminal_approver(stdin: TextIO, stderr: TextIO) -> Approver:
    def approve(req: ApprovalRequest) -> Approval:
        args = json.dumps(dict(req.args), ensure_ascii=False)
        if len(args) > 500:
            args = args[:500] + "..."
        stderr.write(
            f"\nThe script wants to call tools.{req.binding} "
            f"({', '.join(req.effects)}) with {args}\n"
            "Allow? [y]es once / [a]lways this session / [N]o: "
        )
        stderr.flush()
        answer = stdin.readline().strip().lower()
        if answer in ("y", "yes"):
            return Approval.ALLOW_ONCE
        if answer in ("a", "always"):
            return Approval.ALLOW_SESSION
        return Approval.DENY

    return approve


def _readable(res: Any) -> str:
    lines = [f"[{e.level}] {e.message}" for e in res.logs]
    if res.ok:
        lines.append(json.dumps(res.value, indent=2, ensure_ascii=False, default=str))
    else:
        err = res.error
        where = f" at line {err.line}, column {err.column}" if err.line else ""
        lines.append(f"error ({err.kind}) {err.name}: {err.message}{where}")
    lines.append(f"-- {res.stats.duration_ms:.1f} ms, {res.stats.binding_calls} tool calls")
    return "\n".join(lines)


def _sandbox_from(config: str | None, approve: Approver | None) -> Any:
    from . import Sandbox
    from ._config import build, load_config

    if config is None:
        return Sandbox()
    cfg, base = load_config(config)
    return Sandbox(**build(cfg, base, approve))


def _cmd_run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    if args.script == "-":
        code = stdin.read()
        interactive = False  # stdin holds the script; nobody can answer a prompt there
    else:
        try:
            code = Path(args.script).read_text(encoding="utf-8")
        except OSError as exc:
            stderr.write(f"clambot: cannot read {args.script}: {exc.strerror}\n")
            return 2
        interactive = stdin.isatty()
    if args.yes:
        approve: Approver = lambda req: Approval.ALLOW_ONCE  # noqa: E731
    elif interactive:
        approve = _terminal_approver(stdin, stderr)
    else:
        approve = lambda req: Approval.DENY  # noqa: E731
    sb = _sandbox_from(args.config, approve)
    res = sb.run(code)
    if args.json or not stdout.isatty():
        stdout.write(res.model_dump_json(indent=2) + "\n")
    else:
        stdout.write(_readable(res) + "\n")
    return 0 if res.ok else 1


def _cmd_check(args: argparse.Namespace, stdout: TextIO) -> int:
    sb = _sandbox_from(args.config, None)
    lim = sb.limits
    stdout.write(
        f"{args.config}: OK\n"
        f"limits: timeout {lim.timeout_s:g} s, memory {lim.memory_mb} MiB, "
        f"logs {lim.max_log_bytes} B, result {lim.max_result_bytes} B\n"
        f"tools ({len(sb.bindings)}):\n"
    )
    stdout.write(sb.describe_tools() + "\n")
    return 0


def main(
    argv: list[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of `clambot`; returns the exit status (0 ok, 1 script failed, 2 usage)."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="clambot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a script in the sandbox")
    run.add_argument("script", help="path of a .js file, or - for stdin")
    run.add_argument("--config", "-c", help="sandbox.toml (limits, policy, tools)")
    run.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    run.add_argument("--yes", "-y", action="store_true", help="approve every write call")
    check = sub.add_parser("check", help="validate a sandbox.toml")
    check.add_argument("config")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    try:
        if args.command == "run":
            return _cmd_run(args, stdin, stdout, stderr)
        return _cmd_check(args, stdout)
    except ClamBotError as exc:
        stderr.write(f"clambot: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
