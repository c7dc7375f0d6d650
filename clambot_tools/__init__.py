"""ClamBot Tools: run the JavaScript an AI agent writes, without trusting it.

Scripts run in QuickJS-NG compiled to WebAssembly, executed by Wasmtime, with no
ambient authority: the only things a script can reach are the bindings you grant.

    >>> from clambot_tools import Sandbox, Limits
    >>> Sandbox(limits=Limits(timeout_s=2)).run("[1, 2, 3].map(x => x * 2)").value
    [2, 4, 6]
"""

import importlib
from typing import Any

from ._audit import AuditLog
from ._bindings import Binding, Effect, binding
from ._bytecode import BytecodeCache, CacheStats
from ._context import CallContext, current_call
from ._errors import (
    ClamBotError,
    ConfigError,
    ErrorKind,
    GuestUnavailableError,
    ManifestError,
    ScriptArgumentsError,
    ScriptError,
    SessionClosedError,
    SnapshotError,
    TransientError,
)
from ._limits import Limits
from ._manifest import Manifest
from ._policy import Approval, ApprovalRequest, Approver, Policy
from ._result import LogEntry, RunError, RunResult, RunStats
from ._sandbox import Sandbox
from ._session import Session
from ._shapes import ResultShapes
from ._snapshot import local_snapshot_key
from .scripts import SavedScript, ScriptLibrary

#: this distribution's version (clambot-tools), as in its metadata
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`clambot_tools.render` is imported when first used (not at startup)."""
    if name == "render":
        return importlib.import_module(f"{__name__}.render")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext clambot_tools`: register the ``%%js_sandbox`` cell magic."""
    from ._magic import load_ipython_extension as load

    load(ipython)


__all__ = [
    "Approval",
    "ApprovalRequest",
    "Approver",
    "AuditLog",
    "Binding",
    "BytecodeCache",
    "CacheStats",
    "CallContext",
    "ClamBotError",
    "ConfigError",
    "Effect",
    "ErrorKind",
    "GuestUnavailableError",
    "Limits",
    "LogEntry",
    "Manifest",
    "ManifestError",
    "Policy",
    "ResultShapes",
    "RunError",
    "RunResult",
    "RunStats",
    "Sandbox",
    "SavedScript",
    "ScriptArgumentsError",
    "ScriptError",
    "ScriptLibrary",
    "Session",
    "SessionClosedError",
    "SnapshotError",
    "TransientError",
    "binding",
    "current_call",
    "local_snapshot_key",
    "render",
]
