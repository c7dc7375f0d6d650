"""Every sentence the core writes for a script or a model, in one place.

The guest reports *what* happened (a kind, a limit); the words are chosen here, so a
limit is described the same way whichever path stopped the run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import ErrorKind
from ._limits import Limits

#: the JS error name of each limit (one name per kind, whatever stopped the run)
LIMIT_NAMES: dict[ErrorKind, str] = {
    "timeout": "TimeoutError",
    "memory": "MemoryLimitError",
    "stack": "StackOverflowError",
    "output_limit": "OutputLimitError",
    "internal": "InternalError",
}

#: longest rendering of a call's arguments inside a message
_ARGS_PREVIEW = 200

SESSION_RESTORED = " (the session was restored to its state before this run)"


def timeout(limits: Limits, *, fuel: bool = False) -> str:
    """Why a run that ran out of time (or fuel) stopped."""
    if fuel:
        return f"the script used up its fuel budget of {limits.fuel} units"
    return f"the script ran longer than its {limits.timeout_s:g} s time limit"


def memory(limits: Limits) -> str:
    """Why a run that ran out of memory stopped."""
    return f"the script needed more than its {limits.memory_mb} MiB memory limit"


def stack() -> str:
    """Why a run whose native stack ran out stopped."""
    return "call stack exhausted (recursion too deep)"


def log_limit(limits: Limits) -> str:
    """Why a run that printed too much stopped."""
    return f"console output exceeded the {limits.max_log_bytes}-byte log limit"


CANCELLED = "the run was cancelled before it finished"
POOL_FULL = "too many sandboxes are alive at once; try again"
GUEST_TOO_BIG = "the sandbox could not be created within its memory limit"


def internal(detail: str) -> str:
    """An engine fault, with the engine's own words."""
    return f"the sandbox failed (not the script): {detail}" if detail else "the sandbox failed"


def call_text(name: str, args_json: bytes | str) -> str:
    """``tools.name({...})`` with the arguments cut to a readable length."""
    text = args_json.decode("utf-8", "replace") if isinstance(args_json, bytes) else args_json
    if text in ("null", ""):
        text = ""
    elif len(text) > _ARGS_PREVIEW:
        text = text[:_ARGS_PREVIEW] + "…"
    return f"{tool_ref(name)}({text})"


_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def tool_ref(name: str) -> str:
    """How a script names the tool: ``tools.x``, or ``tools["x-y"]``."""
    return f"tools.{name}" if _IDENT.match(name) else f"tools[{json.dumps(name)}]"


def not_approved(name: str) -> str:
    """The message of a call a human (or the approver) did not approve."""
    return f"{tool_ref(name)} was not approved"


def approver_failed(name: str) -> str:
    """The message of a call whose approver raised (it is denied)."""
    return f"{tool_ref(name)} was not approved (the approval could not be obtained)"


def run_over(name: str) -> str:
    """The message of a call that could not go ahead because its run had ended."""
    return f"{tool_ref(name)} was not called: the run had ended"


def too_much_pending(pending: int, cap: int) -> str:
    """A call refused because the run's calls not yet answered hold too many bytes."""
    return (
        f"the tool calls not yet answered already carry {pending} bytes of arguments (the "
        f"run's limit is {cap}): await some of them before making more"
    )


def not_granted(name: str, granted: list[str]) -> str:
    """A call of a name that is not a granted tool."""
    return f"{tool_ref(name)} is not a granted tool; granted: {', '.join(granted) or 'none'}"


def missing_tool(name: str, callable_names: list[str]) -> str:
    """`tools.name(...)` where `name` is not a tool the script can call: the nearest
    callable name, and the list."""
    import difflib

    lowered = {n.lower(): n for n in callable_names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    near = f" (did you mean {lowered[close[0]]}?)" if close else ""
    shown = ", ".join(callable_names[:30]) + (", ..." if len(callable_names) > 30 else "")
    return f"{tool_ref(name)} is not a granted tool{near}; granted: {shown or 'none'}"


def call_summary(kind: str, js_name: str, call: str, message: str) -> str:
    """The RunError message of a tool call's error left uncaught: the call, then why
    (``tools.get_order({"id":"A-9"}) failed: no such order``)."""
    ref = call.split("(", 1)[0]
    bad_args = f"invalid arguments for {ref}: "
    if message.startswith(bad_args):
        return f"{call} has invalid arguments: {message[len(bad_args) :]}"
    if message.startswith(ref + " "):  # "tools.x was not approved": say it of the call
        return f"{call} {message[len(ref) + 1 :]}"
    if kind == "binding_denied":
        return f"{call} was refused: {message}"
    return f"{call} failed: {message}"


def result_too_large(size: int, limits: Limits) -> str:
    """A tool result over the result cap."""
    return f"the result ({size} bytes) is larger than the {limits.max_result_bytes}-byte limit"


def result_not_json(exc: BaseException) -> str:
    """A tool result that is not JSON data."""
    return f"the tool returned a value that is not JSON data: {exc}"


def unreadable(what: str, exc: BaseException) -> str:
    """The guest's output could not be parsed (an engine fault)."""
    return f"the {what} could not be read: {exc}"


def args_preview(value: Any) -> str:
    """Arguments as compact JSON, cut for a message."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        text = "…"
    return text if len(text) <= _ARGS_PREVIEW else text[:_ARGS_PREVIEW] + "…"


# -- saved scripts


NO_LIBRARY = "this Sandbox has no script library: pass Sandbox(scripts=ScriptLibrary(...))"


def script_bad_name(name: object) -> str:
    """A script name that cannot be one."""
    return (
        f"{name!r} cannot name a saved script: use 1-64 letters, digits and _, "
        "not starting with a digit"
    )


def script_unknown(name: str, known: list[str]) -> str:
    """A script name the library does not have."""
    listed = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    return f"no saved script is named {name!r}; saved: {listed or 'none'}"


def script_no_version(name: str, version: object, numbers: list[int]) -> str:
    """A version the library does not have."""
    return f"script {name} has no version {version!r}; its versions: {numbers}"


def script_changed(ref: str, where: str) -> str:
    """A stored version whose content no longer matches its sha256."""
    return (
        f"{where}: saved script {ref} was changed after it was saved (its content no "
        "longer matches its sha256), so it is refused: versions are immutable; restore "
        "it, or save the change as a new version"
    )


def script_number_taken(name: str, number: int) -> str:
    """A save that asks for a version number already holding other content."""
    return (
        f"version {number} of script {name} exists with other content: versions are "
        "immutable; save the change as a new version"
    )


def save_request(name: str, number: int) -> str:
    """What the approver is told a save does."""
    return f"Save the script {name} as version {number} in the script library"


def save_not_approved(name: str) -> str:
    """A save the approver did not approve."""
    return f"saving script {name} was not approved"


def save_denied_effect() -> str:
    """A save refused because the policy denies writes."""
    return "saving a script is a write, and the policy denies the effect 'write'"


def save_needs_approver() -> str:
    """A save refused because nobody can approve it."""
    return (
        "saving a script is a write, which needs a human's approval, and no approver is "
        "set (the application can pass Policy(approve=...), or "
        "Policy(auto_approve=('write',)) to save scripts unasked)"
    )


def approver_failed_save() -> str:
    """A save whose approver raised."""
    return "saving the script was not approved (the approval could not be obtained)"


def script_args_invalid(name: str, problems: list[str]) -> str:
    """Arguments a saved script's schema refuses."""
    return f"invalid arguments for script {name}: " + "; ".join(problems)


def script_needs(name: str, missing: list[str]) -> str:
    """A saved script that calls tools the Sandbox does not grant."""
    return (
        f"script {name} calls tools this Sandbox does not grant: {', '.join(missing)}; "
        "grant them, or save a version that does without"
    )


def saved_script_failed(name: str, kind: str, message: str) -> str:
    """The error a script sees when a saved script it called failed."""
    return f"saved script {name} failed ({kind}): {message}"


def nested_too_deep(depth: int) -> str:
    """A saved script calling saved scripts past the nesting cap."""
    return f"saved scripts may call saved scripts at most {depth} levels deep"
