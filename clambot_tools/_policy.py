"""Policy: which tool calls a run may make. Enforced in Python, never in JS glue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._bindings import EFFECTS, Binding, Effect
from ._errors import ConfigError


@dataclass(frozen=True)
class Policy:
    """Decides each tool call before the binding's function runs.

    Attributes:
        allow: names of the bindings a script may call; None allows every granted one.
        deny_effects: effects that are refused outright (e.g. ``["write", "network"]``).
        max_calls: most tool calls one run may make (default 1000); None for no cap.

    Raises ConfigError for an unknown effect or a negative cap.
    """

    allow: Sequence[str] | None = None
    deny_effects: Sequence[Effect] = ()
    max_calls: int | None = 1000

    def __post_init__(self) -> None:
        if isinstance(self.allow, str):
            raise ConfigError("Policy.allow is a list of binding names, not one string")
        bad = [e for e in self.deny_effects if e not in EFFECTS]
        if bad:
            raise ConfigError(f"Policy.deny_effects: unknown effects {bad}; use {list(EFFECTS)}")
        if self.max_calls is not None and (
            isinstance(self.max_calls, bool) or not isinstance(self.max_calls, int)
            or self.max_calls < 0
        ):
            raise ConfigError(
                f"Policy.max_calls must be an int >= 0 or None, got {self.max_calls!r}"
            )

    def refusal(self, b: Binding, calls_so_far: int) -> str | None:
        """Why a call to `b` is refused, or None when it may go ahead."""
        if self.allow is not None and b.name not in self.allow:
            return f"tools.{b.name} is not allowed by the policy"
        denied = [e for e in b.effects if e in self.deny_effects]
        if denied:
            return f"tools.{b.name} has effect {denied[0]!r}, which the policy denies"
        if self.max_calls is not None and calls_so_far >= self.max_calls:
            return f"the policy allows at most {self.max_calls} tool calls per run"
        return None
