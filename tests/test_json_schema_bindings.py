"""Bindings made from a raw JSON Schema, and the call context a binding can read."""

from __future__ import annotations

import threading
from typing import Any

from clambot_tools import CallContext, ConfigError, Limits, Sandbox, binding, current_call

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "qty": {"type": "integer", "minimum": 1},
        "mode": {"enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["order_id"],
}


def _echo(**kwargs: Any) -> Any:
    return kwargs


def test_json_schema_binding_passes_valid_arguments_through() -> None:
    b = binding(_echo, name="order", json_schema=SCHEMA)
    sb = Sandbox(bindings=[b])
    res = sb.run("await tools.order({order_id: 'A1', qty: 2, mode: 'fast', tags: ['x']})")
    assert res.value == {"order_id": "A1", "qty": 2, "mode": "fast", "tags": ["x"]}


def test_json_schema_binding_refuses_what_the_schema_refuses() -> None:
    calls: list[Any] = []

    def record(**kwargs: Any) -> None:
        calls.append(kwargs)

    sb = Sandbox(bindings=[binding(record, name="order", json_schema=SCHEMA)])
    res = sb.run("await tools.order({order_id: 7, qty: 0, mode: 'warp', tags: [1], x: 1})")
    assert res.error is not None and res.error.kind == "binding_failed"
    msg = res.error.message
    for part in (
        "order_id: must be string",
        "qty: must be >= 1",
        "mode: must be one of",
        "tags.0: must be string",
        "x: Extra inputs are not permitted",
    ):
        assert part in msg, msg
    assert sb.run("await tools.order({})").error.message.endswith("order_id: Field required")
    assert calls == []


def test_json_schema_must_describe_an_object() -> None:
    for bad in ({"type": "array"}, "not a schema"):
        try:
            binding(_echo, name="x", json_schema=bad)  # type: ignore[arg-type]
        except ConfigError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_result_schema_types_the_declaration() -> None:
    b = binding(
        _echo,
        name="order",
        json_schema=SCHEMA,
        result_schema={"type": "object", "properties": {"total": {"type": "number"}}},
    )
    text = Sandbox(bindings=[b]).describe_tools()
    assert "order_id: string;" in text and "Promise<{ total?: number }>" in text


def test_a_binding_sees_its_call_context_and_deadline() -> None:
    seen: list[CallContext | None] = []

    def probe() -> float:
        ctx = current_call()
        seen.append(ctx)
        assert ctx is not None
        return ctx.remaining()

    async def aprobe() -> float:
        ctx = current_call()
        assert ctx is not None and ctx.binding == "aprobe"
        return ctx.remaining()

    sb = Sandbox(bindings=[probe, aprobe], limits=Limits(timeout_s=30))
    res = sb.run("[await tools.probe(), await tools.aprobe()]")
    assert res.ok, res.error
    assert all(0 < left <= 30 for left in res.value)
    assert seen[0] is not None and seen[0].binding == "probe"
    assert current_call() is None  # nothing leaks outside the call


def test_the_call_context_is_cancelled_when_the_run_ends_first() -> None:
    contexts: list[CallContext] = []
    hooked: list[str] = []
    released = threading.Event()

    def slow() -> None:
        ctx = current_call()
        assert ctx is not None
        contexts.append(ctx)
        ctx.on_cancel(lambda: hooked.append("cancelled"))
        ctx.on_cancel(released.set)
        released.wait(30)  # a binding that waits for its run to end

    sb = Sandbox(bindings=[slow], limits=Limits(timeout_s=0.3))
    res = sb.run("await tools.slow()")
    assert res.error is not None and res.error.kind == "timeout"
    assert released.wait(10)
    assert contexts and contexts[0].cancelled and contexts[0].remaining() == 0
    assert hooked == ["cancelled"]


def test_an_object_schema_without_properties_takes_any_arguments() -> None:
    # declared `args?: Record<string, unknown>`: the validation must agree
    b = binding(_echo, name="free", json_schema={"type": "object"})
    sb = Sandbox(bindings=[b])
    assert "free(args?: Record<string, unknown>)" in sb.describe_tools()
    assert sb.run("await tools.free({a: 1, b: [2]})").value == {"a": 1, "b": [2]}
