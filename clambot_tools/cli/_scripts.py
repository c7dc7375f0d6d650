"""`clambot scripts`: the saved-script library from the command line.

    clambot scripts list [--json]                       # the latest version of each
    clambot scripts show NAME[@N] [--json]              # metadata, versions, source
    clambot scripts run NAME[@N] ['{"month": "2024-03"}'] [--json] [--yes]
    clambot scripts save NAME FILE.js --description TEXT [--schema JSON|FILE] [--bindings a,b]

The library is ``--dir DIR`` or ``--db FILE`` (SQLite), else the config's ``[scripts]``
section (``path = "scripts"`` or ``database = "scripts.db"``, relative to the config),
else ``./scripts``. `run` and `save` use the config's limits, policy and bindings
(``--config``). Saving is a write: it asks on the terminal, ``--yes`` approves it, and
without a terminal it is refused. Exit status: 0 ok, 1 the script failed, 2 a usage,
config or library error (an unknown script, bad arguments, a refused save).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .._errors import ConfigError
from .._policy import Approval, Approver
from ..scripts import SavedScript, ScriptLibrary
from ._terminal import Output, TerminalApprover, is_terminal

#: how long a save waits for the operator's answer
SAVE_QUESTION_S = 300.0


def add_parser(sub: Any, make: Any) -> None:
    """Add the `scripts` command to the `clambot` parser (`make` makes a subparser)."""
    scripts = make(sub, "scripts", help="saved scripts: list, show, run, save")
    ssub = scripts.add_subparsers(dest="action", required=True, parser_class=type(scripts))

    def action(name: str, text: str) -> Any:
        p = make(ssub, name, help=text)
        p.add_argument("--config", "-c", help="sandbox.toml (limits, policy, tools, [scripts])")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--dir", help="the library directory (default: ./scripts)")
        where.add_argument("--db", help="a SQLite script library")
        return p

    p = action("list", "the latest version of every saved script")
    p.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    p = action("show", "one saved script: metadata, versions and source")
    p.add_argument("name", help="NAME or NAME@NUMBER")
    p.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    p = action("run", "run a saved script with arguments")
    p.add_argument("name", help="NAME or NAME@NUMBER")
    p.add_argument("args", nargs="?", default="{}", help="the arguments as a JSON object")
    p.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    p.add_argument("--yes", "-y", action="store_true", help="approve every write call")
    p = action("save", "save a script file as the next version of NAME")
    p.add_argument("name")
    p.add_argument("file", help="the script (.js), or - for stdin")
    p.add_argument("--description", "-d", required=True, help="what it does, for a model")
    p.add_argument("--schema", help="JSON Schema of its arguments: JSON text or a .json file")
    p.add_argument("--bindings", "-b", default="", help="the tools it calls, comma-separated")
    p.add_argument("--yes", "-y", action="store_true", help="approve the save")


def library(args: argparse.Namespace) -> ScriptLibrary:
    """The library the options (or the config) name. Raises ConfigError/ScriptError."""
    if args.db:
        return ScriptLibrary.sqlite(args.db)
    if args.dir:
        return ScriptLibrary(args.dir)
    if args.config:
        from ._config import load_config

        cfg = load_config(args.config)
        section = cfg.sections.scripts
        if section is not None:
            if section.database is not None:
                return ScriptLibrary.sqlite(cfg.rel(section.database))
            if section.path is not None:
                return ScriptLibrary(cfg.rel(section.path))
    return ScriptLibrary("scripts")


def command(
    args: argparse.Namespace,
    stdin: TextIO,
    out: Output,
    err: Output,
    *,
    read_script: Callable[[str, TextIO], str],
    result_data: Callable[[Any], dict[str, Any]],
) -> int:
    """Run `clambot scripts ACTION`; returns the exit status. `read_script` and
    `result_data` are the command's own (how `clambot run` reads a script and prints a
    RunResult as JSON).

    Raises ClamBotError (exit 2) for a config or library problem."""
    lib = library(args)
    if args.action == "list":
        return _list(lib, args, out)
    if args.action == "show":
        return _show(lib, args, out)
    if args.action == "run":
        return _run(lib, args, stdin, out, err, result_data)
    return _save(lib, args, read_script(args.file, stdin), stdin, out, err)


def _list(lib: ScriptLibrary, args: argparse.Namespace, out: Output) -> int:
    latest = lib.latest()
    if args.json or not out.is_terminal:
        out.json([s.metadata() for s in latest])
        return 0
    if not latest:
        out.line("no saved scripts")
    for s in latest:
        uses = f"  tools: {', '.join(s.bindings)}" if s.bindings else ""
        out.line(f"{s.ref}  {s.version[:12]}  {s.description}{uses}")
    return 0


def _show(lib: ScriptLibrary, args: argparse.Namespace, out: Output) -> int:
    script = lib.get(args.name)
    versions = [v.number for v in lib.versions(script.name)]
    if args.json or not out.is_terminal:
        out.json({**script.metadata(), "versions": versions, "source": script.source})
        return 0
    out.line(f"{script.ref} (versions {', '.join(map(str, versions))}), saved {script.saved_at}")
    out.line(f"sha256: {script.version}")
    out.line(f"description: {script.description}")
    out.line(f"tools: {', '.join(script.bindings) or 'none'}")
    schema, _ = _pretty(script.args_schema)
    out.line(f"args schema: {schema}")
    out.line("---")
    out.text(script.source if script.source.endswith("\n") else script.source + "\n")
    return 0


def _pretty(value: Any) -> tuple[str, int]:
    from .._text import json_text

    return json_text(value)


def _approver(
    yes: bool, interactive: bool, stdin: TextIO, err: Output
) -> tuple[Approver, TerminalApprover | None]:
    """--yes approves; a terminal asks; anything else is refused."""
    if yes:
        return (lambda req: Approval.ALLOW_ONCE), None
    if interactive:
        asker = TerminalApprover(stdin, err)
        return asker, asker
    return (lambda req: Approval.DENY), None


def _sandbox(lib: ScriptLibrary, args: argparse.Namespace, approve: Approver) -> Any:
    from .. import Sandbox
    from ._config import build, load_config

    kwargs = build(load_config(args.config), approve) if args.config else {}
    if not args.config:
        from .._policy import Policy

        kwargs["policy"] = Policy(approve=approve)
    return Sandbox(**kwargs, scripts=lib)


def _run(
    lib: ScriptLibrary,
    args: argparse.Namespace,
    stdin: TextIO,
    out: Output,
    err: Output,
    result_data: Callable[[Any], dict[str, Any]],
) -> int:
    try:
        values = json.loads(args.args)
    except ValueError as exc:
        raise ConfigError(f"the arguments are not JSON: {exc}") from None
    approve, asker = _approver(args.yes, is_terminal(stdin), stdin, err)
    sb = _sandbox(lib, args, approve)
    if asker is not None:
        asker.start(sb.limits.timeout_s)
    try:
        res = sb.run_saved(args.name, values)
    finally:
        if asker is not None:
            asker.close()
    if args.json or not out.is_terminal:
        out.json(result_data(res))
    else:
        from .._display import run_result_text

        out.line(run_result_text(res, lib.get(args.name).source))
    return 0 if res.ok else 1


def _schema(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if not text.lstrip().startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the schema {text}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the schema is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("the schema must be a JSON object")
    return value


def _save(
    lib: ScriptLibrary,
    args: argparse.Namespace,
    source: str,
    stdin: TextIO,
    out: Output,
    err: Output,
) -> int:
    schema = _schema(args.schema)
    bindings = [b.strip() for b in args.bindings.split(",") if b.strip()]
    # with the script on stdin, nobody can answer a prompt there
    interactive = args.file != "-" and is_terminal(stdin)
    approve, asker = _approver(args.yes, interactive, stdin, err)
    if not args.yes and not interactive:
        err.line("clambot: no terminal to ask on, so the save is refused: pass --yes to approve it")
    sb = _sandbox(lib, args, approve)
    if asker is not None:
        asker.start(SAVE_QUESTION_S)
    try:
        saved: SavedScript = sb.save_script(
            args.name, source, description=args.description, args_schema=schema, bindings=bindings
        )
    finally:
        if asker is not None:
            asker.close()
    out.line(f"saved {saved.ref} ({saved.version[:12]}) in {lib.store!r}")
    return 0
