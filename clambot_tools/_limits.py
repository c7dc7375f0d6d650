"""Limits of a run: every one is on by default and enforced by the host."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Size of the C stack linked into the guest (quickjs_wasm/build.py, -z stack-size).
GUEST_C_STACK_KB = 1024


class Limits(BaseModel):
    """What one run may use. Hitting any limit ends the run with a RunError of that kind.

    Attributes:
        timeout_s: wall-clock time for the whole run, tool calls included.
        memory_mb: memory the JavaScript heap may hold.
        stack_kb: QuickJS's stack budget (at most 960). Deep recursion past it is a
            catchable ``RangeError``; left uncaught it ends the run with kind ``stack``.
        max_log_bytes: total bytes of console output kept; more ends the run
            with kind ``output_limit``.
        max_result_bytes: bytes of the JSON result (also the cap on the JSON of one
            tool call's arguments); more ends the run with kind ``output_limit``.
        fuel: an optional deterministic budget of Wasm instructions (roughly); when it
            runs out the run ends with kind ``timeout``. Costs about 10-20% speed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float = Field(default=5.0, gt=0, le=24 * 3600)
    memory_mb: int = Field(default=64, ge=4, le=3072)
    stack_kb: int = Field(default=512, ge=64, le=GUEST_C_STACK_KB - 64)
    max_log_bytes: int = Field(default=1 << 20, ge=0, le=1 << 30)
    max_result_bytes: int = Field(default=1 << 20, ge=16, le=256 << 20)
    fuel: int | None = Field(default=None, gt=0)
