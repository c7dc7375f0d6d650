"""Policy: which tool calls a run may make. Enforced in Python, never in JS glue."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from ._bindings import Binding, Effect


class Policy(BaseModel):
    """Decides each tool call before the binding's function runs.

    Attributes:
        allow: names of the bindings a script may call; None allows every granted one.
        deny_effects: effects that are refused outright (e.g. ``["write", "network"]``).
        max_calls: most tool calls one run may make; the call past it is denied.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    allow: Sequence[str] | None = None
    deny_effects: Sequence[Effect] = ()
    max_calls: int | None = Field(default=1000, ge=0)

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
