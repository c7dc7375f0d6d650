"""A failed or refused tool call names the call, and points at the line that made it,
however and whenever it was answered (issue 12, "Errors")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from clambot_tools import Approval, Limits, Policy, Sandbox, binding

CODE = "const x = 1;\nconst order = await tools.get_order({order_id: 'A-99999'});\norder"


def _get_order(order_id: str) -> dict[str, Any]:
    raise LookupError(f"no order with id {order_id}")


def test_a_failed_call_names_the_call_and_its_line_on_the_first_call() -> None:
    # a fresh Sandbox: the binding is not yet known to be fast, so the answer comes
    # back later through the pool; the line must not depend on that
    for make in (binding(_get_order, name="get_order"),):
        res = Sandbox(bindings=[make]).run(CODE)
        err = res.error
        assert err is not None and err.kind == "binding_failed"
        assert err.message == (
            'tools.get_order({"order_id":"A-99999"}) failed: no order with id A-99999'
        )
        assert (err.line, err.column) == (2, 27)


def test_inline_pool_and_async_answers_give_the_same_position() -> None:
    async def aget_order(order_id: str) -> dict[str, Any]:
        raise LookupError(f"no order with id {order_id}")

    def slow_get_order(order_id: str) -> dict[str, Any]:
        time.sleep(0.01)
        raise LookupError(f"no order with id {order_id}")

    positions = set()
    for fn in (_get_order, aget_order, slow_get_order):
        sb = Sandbox(bindings=[binding(fn, name="get_order")])
        for _ in range(3):  # the first call and, for the fast one, inline ones after it
            err = sb.run(CODE).error
            assert err is not None
            positions.add((err.line, err.column, err.message))
    assert len(positions) == 1, positions


def test_an_approval_denial_has_a_position() -> None:
    @binding(effects=("write",))
    def refund(order_id: str) -> str:
        return "refunded"

    sb = Sandbox(bindings=[refund], policy=Policy(approve=lambda req: Approval.DENY))
    err = sb.run("\n\nawait tools.refund({order_id: 'A1'})").error
    assert err is not None and err.kind == "binding_denied"
    assert err.message == 'tools.refund({"order_id":"A1"}) was not approved'
    assert err.line == 3


def test_the_failing_call_among_twenty_is_named() -> None:
    def get(i: int) -> int:
        if i == 13:
            raise ValueError("thirteen is unlucky")
        return i

    sb = Sandbox(bindings=[get])
    res = sb.run("await Promise.all(Array.from({length: 20}, (_, i) => tools.get({i})))")
    assert res.error is not None
    assert res.error.message == 'tools.get({"i":13}) failed: thirteen is unlucky'
    assert res.error.line == 1


def test_the_call_stack_of_a_call_made_in_a_function() -> None:
    sb = Sandbox(bindings=[binding(_get_order, name="get_order")])
    res = sb.run(
        "async function load(id) {\n  return await tools.get_order({order_id: id});\n}\n"
        "await load('B-1');"
    )
    assert res.error is not None and res.error.stack is not None
    assert "load (script.js:2:" in res.error.stack
    assert res.error.line == 2


def test_the_script_still_sees_the_tools_own_message() -> None:
    sb = Sandbox(bindings=[binding(_get_order, name="get_order")])
    res = sb.run("try { await tools.get_order({order_id: 'A'}) } catch (e) { [e.message, e.call] }")
    assert res.value == ["no order with id A", 'tools.get_order({"order_id":"A"})']


def test_a_long_message_is_not_cut_at_255_bytes() -> None:
    def wordy() -> None:
        raise RuntimeError("x" * 600 + " the amount was 5000")

    res = Sandbox(bindings=[wordy]).run("await tools.wordy()")
    assert res.error is not None and res.error.message.endswith("the amount was 5000")


def test_a_misspelt_tool_is_named_with_the_nearest_granted_one() -> None:
    def get_order(order_id: str) -> str:
        return order_id

    def refund(order_id: str) -> str:
        return order_id

    sb = Sandbox(bindings=[get_order, refund], policy=Policy(auto_approve=("write",)))
    err = sb.run("\nawait tools.get_orders({order_id: 'A'})").error
    assert err is not None and err.kind == "runtime"
    assert err.message == (
        "tools.get_orders is not a granted tool (did you mean get_order?); "
        "granted: get_order, refund, $describe, $search"
    )
    assert err.line == 2
    # feature checks and optional calls keep plain JavaScript semantics
    assert sb.run("[typeof tools.nope, await tools.nope?.(), 'get_order' in tools]").value == [
        "undefined",
        None,
        True,
    ]


def test_async_arun_errors_name_the_call_too() -> None:
    async def aget_order(order_id: str) -> dict[str, Any]:
        raise LookupError("gone")

    sb = Sandbox(bindings=[binding(aget_order, name="get_order")], limits=Limits(timeout_s=10))
    res = asyncio.run(sb.arun(CODE))
    assert res.error is not None
    assert res.error.message == 'tools.get_order({"order_id":"A-99999"}) failed: gone'
    assert (res.error.line, res.error.column) == (2, 27)
