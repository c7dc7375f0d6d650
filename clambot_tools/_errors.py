"""Errors of ClamBot Tools.

Two families, for two audiences:

* Problems inside a script (a syntax error, an exception, a limit hit, a denied tool call)
  are *results*, not exceptions: ``Sandbox.run`` returns a ``RunResult`` whose ``error``
  is a ``RunError`` with a ``kind``. Nothing a script does raises in the host.

* Problems of the host program (a bad argument to our API, a package installed without
  its guest) raise exceptions from this tree::

      ClamBotError                  base of everything raised by this package
      ├── ConfigError               invalid Limits, bindings or other arguments (also a ValueError)
      │   ├── SnapshotError         bytes that are not a loadable snapshot of this guest
      │   ├── SessionClosedError    a run, snapshot or use of a Session after close()
      │   ├── ManifestError         bindings that differ from their manifest, or a lock refused
      │   └── ScriptError           a saved script that is missing, damaged, or not saved
      │       └── ScriptArgumentsError  arguments its schema refuses (each field named)
      └── GuestUnavailableError     the compiled guest is missing or does not load

  and one exception bindings raise themselves:

      TransientError                a binding's way to say "try me again": the call is
                                    retried with backoff (Policy.retry_*), within the
                                    run's time limit
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

#: What went wrong in a run, from the model's point of view: what to fix next.
ErrorKind = Literal[
    "timeout",  # the wall-clock limit (or the fuel budget) ran out
    "memory",  # the script needed more than the memory limit
    "stack",  # recursion went deeper than the stack limit
    "output_limit",  # logs or the result exceeded their byte caps
    "syntax",  # the script does not parse
    "runtime",  # an uncaught JS exception, or a result that cannot become JSON
    "binding_denied",  # a tool call the policy refused, left uncaught
    "binding_failed",  # a tool call that failed in the host, left uncaught
    "internal",  # a fault of the engine itself; the host survived it
]

ERROR_KINDS: tuple[ErrorKind, ...] = (
    "timeout",
    "memory",
    "stack",
    "output_limit",
    "syntax",
    "runtime",
    "binding_denied",
    "binding_failed",
    "internal",
)


class ClamBotError(Exception):
    """Base class of every exception this package raises."""


class ConfigError(ClamBotError, ValueError):
    """Raised when an argument to the API is invalid (limits, bindings, code type)."""


class SnapshotError(ConfigError):
    """Raised by ``Sandbox.restore`` for bytes that are not a snapshot, are damaged, or
    come from another guest build, format version or set of bindings."""


class SessionClosedError(ConfigError):
    """Raised when a closed ``Session`` is asked to run or to snapshot."""


class ManifestError(ConfigError):
    """Raised when granted bindings differ from their manifest (``drift`` names each
    difference), or the manifest cannot be read or its signature is missing or invalid."""

    def __init__(self, message: str, *, drift: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.drift = tuple(drift)


class ScriptError(ConfigError):
    """Raised for a saved script that cannot be had or saved: no such name or version,
    a version changed after it was saved (its content no longer matches its sha256), an
    invalid definition (name, schema, source that does not parse), a save the policy
    or its approver refused, or tools it needs that the Sandbox does not grant."""


class ScriptArgumentsError(ScriptError):
    """Raised by ``Sandbox.run_saved`` before the run when the arguments do not fit the
    script's JSON Schema; `problems` has one ``field: what is wrong`` line per problem."""

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class GuestUnavailableError(ClamBotError):
    """Raised when the compiled guest module is missing or cannot be loaded."""


class TransientError(Exception):
    """Raise this from a binding for a failure worth retrying (a rate limit, a blip).

    The call is retried as the policy says; if every attempt fails, the script sees a
    JS Error with this exception's message.
    """
