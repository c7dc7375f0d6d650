"""The ``%%js_sandbox`` cell magic: run a notebook cell as a sandboxed script.

Load it with ``%load_ext clambot_tools``, then::

    %%js_sandbox --timeout 2 --memory 32 --bindings get_weather --var res
    const w = await tools.get_weather({city: 'Paris'});
    w.temp_c * 9 / 5 + 32

The cell runs in a fresh Sandbox with only the bindings named; its RunResult is shown
(value, logs, or the error with the failing line of the cell marked) and, with ``--var``,
stored in the notebook's namespace. ``--sandbox NAME`` runs it in a Sandbox of the
notebook, or in a Session whose JavaScript globals persist from cell to cell. IPython is
imported only when the magic is loaded or used: the core package does not need it.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ._bindings import Binding, binding
from ._display import run_result_html, run_result_markdown, run_result_text
from ._errors import ConfigError
from ._limits import Limits
from ._result import RunResult
from ._sandbox import Sandbox
from ._session import Session

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

MAGIC_NAME = "js_sandbox"


class MagicArgumentError(ValueError):
    """The magic's line is invalid (shown by IPython as a UsageError)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise MagicArgumentError(f"%%{MAGIC_NAME}: {message}")


def _parser() -> _Parser:
    p = _Parser(
        prog=f"%%{MAGIC_NAME}",
        add_help=False,
        usage=f"%%%%{MAGIC_NAME} [--timeout S] [--memory MB] [--bindings NAME1,NAME2] "
        "[--sandbox NAME] [--var NAME]",
        description="Run the cell as JavaScript in a ClamBot sandbox and show its RunResult.",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="wall-clock limit in seconds (default: Limits' 5)",
    )
    p.add_argument(
        "--memory",
        type=int,
        metavar="MB",
        help="JavaScript memory limit in MiB (default: Limits' 64)",
    )
    p.add_argument(
        "--bindings",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME1,NAME2",
        help="variables of the notebook to grant as tools: callables (granted "
        "under the variable's name), binding(...) objects (under their own "
        "name) or lists of them",
    )
    p.add_argument(
        "--sandbox",
        metavar="NAME",
        help="run in this Sandbox of the notebook (its limits, bindings, policy "
        "and audit) instead of a new one, or in this Session (sb.session(): its "
        "JavaScript globals persist from cell to cell)",
    )
    p.add_argument("--var", metavar="NAME", help="store the RunResult in this variable")
    return p


@dataclass(frozen=True)
class MagicArgs:
    """The parsed line of ``%%js_sandbox``."""

    timeout: float | None
    memory: int | None
    bindings: tuple[str, ...]
    sandbox: str | None
    var: str | None


def parse_line(line: str) -> MagicArgs:
    """Parse the magic's line. Raises MagicArgumentError for anything invalid."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise MagicArgumentError(f"%%{MAGIC_NAME}: {exc}") from None
    ns = _parser().parse_args(argv)
    names = tuple(n.strip() for arg in ns.bindings for n in arg.split(",") if n.strip())
    for label, values in (
        ("--bindings", names),
        ("--sandbox", (ns.sandbox,)),
        ("--var", (ns.var,)),
    ):
        for v in values:
            if v is not None and not v.isidentifier():
                raise MagicArgumentError(
                    f"%%{MAGIC_NAME}: {label} wants a variable name, got {v!r}"
                )
    if ns.sandbox is not None and (ns.timeout is not None or ns.memory is not None or names):
        raise MagicArgumentError(
            f"%%{MAGIC_NAME}: --sandbox cannot be combined with --timeout, --memory or "
            "--bindings (they are the Sandbox's own)"
        )
    return MagicArgs(ns.timeout, ns.memory, names, ns.sandbox, ns.var)


def _lookup(ns: Mapping[str, Any], name: str, option: str) -> Any:
    if name not in ns:
        raise MagicArgumentError(f"%%{MAGIC_NAME}: {option}: no variable named {name!r}")
    return ns[name]


def _granted(ns: Mapping[str, Any], names: tuple[str, ...]) -> list[Binding]:
    """The bindings named on the line, looked up in the user's namespace."""
    out: list[Binding] = []
    for name in names:
        obj = _lookup(ns, name, "--bindings")
        items = obj if isinstance(obj, (list, tuple)) else None
        try:
            if isinstance(obj, Binding):
                out.append(obj)
            elif items is not None and all(isinstance(x, Binding) or callable(x) for x in items):
                out.extend(binding(x) for x in items)
            elif callable(obj):
                out.append(binding(obj, name=name))
            else:
                raise MagicArgumentError(
                    f"%%{MAGIC_NAME}: --bindings: {name!r} is a {type(obj).__name__}, not a "
                    "callable, a binding(...) or a list of them"
                )
        except ConfigError as exc:
            raise MagicArgumentError(f"%%{MAGIC_NAME}: --bindings: {exc}") from None
    return out


def sandbox_for(args: MagicArgs, ns: Mapping[str, Any]) -> Sandbox | Session:
    """What the cell runs in: the Sandbox or Session named by ``--sandbox``, or a new
    Sandbox with the limits and bindings of the line. Raises MagicArgumentError for a
    bad name or value."""
    if args.sandbox is not None:
        sb = _lookup(ns, args.sandbox, "--sandbox")
        if not isinstance(sb, (Sandbox, Session)):
            raise MagicArgumentError(
                f"%%{MAGIC_NAME}: --sandbox: {args.sandbox!r} is a {type(sb).__name__}, "
                "not a clambot_tools.Sandbox or Session"
            )
        return sb
    overrides: dict[str, Any] = {}
    if args.timeout is not None:
        overrides["timeout_s"] = args.timeout
    if args.memory is not None:
        overrides["memory_mb"] = args.memory
    bindings = _granted(ns, args.bindings)
    try:
        return Sandbox(limits=Limits(**overrides), bindings=bindings)
    except ConfigError as exc:
        raise MagicArgumentError(f"%%{MAGIC_NAME}: {exc}") from None


class ShownRunResult:
    """A RunResult with the code it ran, for display: the error's line is shown marked.

    Jupyter picks ``_repr_html_``; ``_repr_markdown_`` serves Markdown exports and
    ``repr`` a terminal IPython.
    """

    def __init__(self, result: RunResult, code: str) -> None:
        self.result = result
        self.code = code

    def _repr_html_(self) -> str:
        return run_result_html(self.result, self.code)

    def _repr_markdown_(self) -> str:
        return run_result_markdown(self.result, self.code)

    def __repr__(self) -> str:
        return run_result_text(self.result, self.code)


def run_cell(line: str, cell: str, ns: dict[str, Any]) -> ShownRunResult:
    """What ``%%js_sandbox LINE`` does with `cell`, minus the display: run the cell and,
    with ``--var NAME``, store the RunResult as ``ns[NAME]``.

    Raises MagicArgumentError for an invalid line (bad option, unknown variable, invalid
    limit, a closed Session); anything the script does is in the RunResult.
    """
    args = parse_line(line)
    sb = sandbox_for(args, ns)
    try:
        result = sb.run(cell)
    except ConfigError as exc:  # a closed Session
        raise MagicArgumentError(f"%%{MAGIC_NAME}: {exc}") from None
    if args.var is not None:
        ns[args.var] = result
    return ShownRunResult(result, cell)


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the ``%%js_sandbox`` cell magic (called by ``%load_ext clambot_tools``)."""

    def js_sandbox(line: str, cell: str) -> None:
        from IPython.core.error import UsageError
        from IPython.display import display

        try:
            shown = run_cell(line, cell, ipython.user_ns)
        except MagicArgumentError as exc:
            raise UsageError(str(exc)) from None
        cast("Callable[..., None]", display)(shown)  # IPython's display() is untyped

    js_sandbox.__doc__ = _parser().format_help()
    ipython.magics_manager.register_function(js_sandbox, magic_kind="cell", magic_name=MAGIC_NAME)
