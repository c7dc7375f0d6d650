"""Policy: which tool calls a run may make. Enforced in Python, never in JS glue.

Each call is decided in this order: the allow-list, the denied effects, the per-run
call cap, then (for bindings whose effects need it) the approval callback. A refused
call rejects in JS with kind ``binding_denied`` and the binding's function never runs.

A binding with an effect that needs approval (``write`` by default) is refused when no
approver is set, unless the application opts out for that effect with
``auto_approve``: no write runs unasked by default.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._bindings import EFFECTS, Binding, Effect
from ._errors import ConfigError


class Approval(str, enum.Enum):
    """An approver's answer."""

    ALLOW_ONCE = "allow_once"  # this call only
    ALLOW_SESSION = "allow_session"  # this binding, for the rest of the Sandbox's life
    DENY = "deny"


@dataclass(frozen=True, kw_only=True)
class ApprovalRequest:
    """What an approver is shown: the binding, the arguments, and which script asks.

    Attributes:
        binding: the binding's name.
        description: the binding's description.
        effects: the binding's effects.
        args: the validated arguments of the call, exactly as the function gets them.
        code_sha256: sha256 of the script that makes the call.
        args_sha256: sha256 of the arguments as canonical JSON (sorted keys).
        occurrence: how many calls of this run before this one had the same binding
            and arguments (0 for the first): a call's place in its run that does not
            depend on the order in which concurrent calls arrive.
        request_id: names this exact call: a digest of the binding, ``args_sha256``,
            ``code_sha256`` and ``occurrence``. An answer given for one request_id
            must never approve a call with another.
    """

    binding: str
    description: str
    effects: tuple[Effect, ...]
    args: Mapping[str, Any]
    code_sha256: str
    args_sha256: str = ""
    occurrence: int = 0
    request_id: str = ""


ApprovalAnswer = Approval | bool
#: A sync or async callable; True means ALLOW_ONCE and False means DENY.
Approver = Callable[[ApprovalRequest], ApprovalAnswer | Awaitable[ApprovalAnswer]]


def _check_int(name: str, value: object, lo: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lo:
        raise ConfigError(f"Policy.{name} must be a number >= {lo:g}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Decides each tool call before the binding's function runs.

    Attributes:
        allow: names of the bindings a script may call; None allows every granted one.
        deny_effects: effects refused outright (e.g. ``["write", "network"]``).
        max_calls: most tool calls one run may make (default 10,000, about 0.15 s of
            inline calls); None for no cap.
        approve: called before a binding whose effects include one of
            ``approve_effects`` runs (a human in the loop). Sync or async. It returns an
            ``Approval`` (or True/False); raising or returning anything else denies.
        approve_effects: which effects need approval (default: ``("write",)``). A call
            that needs approval when ``approve`` is None is refused.
        auto_approve: effects that need no approval after all, e.g.
            ``("write",)`` to let write bindings run unasked (an explicit opt-in).
        retry_attempts: how many times in all a call whose binding raised
            ``TransientError`` is tried (default 3; 1 turns retries off).
        retry_backoff_s: first wait between attempts; doubles each time, capped by
            ``retry_max_backoff_s``. Retries never run past the run's time limit.

    Raises ConfigError for an unknown effect or a value out of range.
    """

    allow: Sequence[str] | None = None
    deny_effects: Sequence[Effect] = ()
    max_calls: int | None = 10_000
    approve: Approver | None = field(default=None, compare=False)
    approve_effects: Sequence[Effect] = ("write",)
    auto_approve: Sequence[Effect] = ()
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05
    retry_max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.allow, str):
            raise ConfigError("Policy.allow is a list of binding names, not one string")
        for name in ("deny_effects", "approve_effects", "auto_approve"):
            bad = [e for e in getattr(self, name) if e not in EFFECTS]
            if bad:
                raise ConfigError(f"Policy.{name}: unknown effects {bad}; use {list(EFFECTS)}")
        if self.max_calls is not None:
            _check_int("max_calls", self.max_calls, 0)
        if self.approve is not None and not callable(self.approve):
            raise ConfigError("Policy.approve must be callable")
        _check_int("retry_attempts", self.retry_attempts, 1)
        _check_int("retry_backoff_s", self.retry_backoff_s, 0)
        _check_int("retry_max_backoff_s", self.retry_max_backoff_s, 0)

    def refusal(self, b: Binding, calls_so_far: int) -> str | None:
        """Why a call to `b` is refused outright, or None when it may go ahead."""
        if self.allow is not None and b.name not in self.allow:
            return f"tools.{b.name} is not allowed by the policy"
        denied = [e for e in b.effects if e in self.deny_effects]
        if denied:
            return f"tools.{b.name} has effect {denied[0]!r}, which the policy denies"
        if self.max_calls is not None and calls_so_far >= self.max_calls:
            return f"the policy allows at most {self.max_calls} tool calls per run"
        if self.approve is None:
            asking = self._asking_effects(b)
            if asking:
                return (
                    f"tools.{b.name} has effect {asking[0]!r}, which needs a human's approval, "
                    "and no approver is set (the application can pass Policy(approve=...), "
                    f"or Policy(auto_approve=({asking[0]!r},)) to run such calls unasked)"
                )
        return None

    def _asking_effects(self, b: Binding) -> list[Effect]:
        return [e for e in b.effects if e in self.approve_effects and e not in self.auto_approve]

    def needs_approval(self, b: Binding) -> bool:
        """Whether a call to `b` must be approved first (by ``approve``)."""
        return self.approve is not None and bool(self._asking_effects(b))
