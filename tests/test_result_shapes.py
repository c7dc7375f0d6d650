"""Result shapes learned from real results (opt-in): shapes only, bounded, merged."""

from __future__ import annotations

from typing import Any

from clambot_tools import ResultShapes, Sandbox, binding

ORDERS: dict[str, dict[str, Any]] = {
    "A1": {
        "id": "A1",
        "customer": {"email": "ann@example.com", "vip": True},
        "items": [{"sku": "SECRET-SKU-1", "qty": 2, "unit_price": 9.5}],
        "note": None,
    },
    "B2": {
        "id": "B2",
        "customer": {"email": "bob@example.com", "vip": False},
        "items": [{"sku": "SECRET-SKU-2", "qty": 1, "unit_price": 4.0, "gift": True}],
        "note": "leave at the door",
        "coupon": "TOPSECRET10",
    },
}


@binding(description="Get an order.")
def get_order(order_id: str) -> dict:  # type: ignore[type-arg]
    return ORDERS[order_id]


def test_shapes_are_learned_only_when_asked() -> None:
    sb = Sandbox(bindings=[get_order])
    assert sb.result_shapes is None
    assert sb.run("await tools.get_order({order_id: 'A1'})").ok
    assert "get_order(args: { order_id: string }): Promise<unknown>;" in sb.describe_tools()


def test_the_next_script_sees_the_fields_the_first_one_got() -> None:
    sb = Sandbox(bindings=[get_order], result_shapes=True)
    before = sb.describe_tools()
    assert "Promise<unknown>" in before
    assert sb.run("await tools.get_order({order_id: 'A1'})").ok
    after = sb.describe_tools()
    assert "(result shape observed from earlier calls)" in after
    assert "items: { sku: string; qty: number; unit_price: number }[];" in after
    assert "customer: { email: string; vip: boolean };" in after
    assert "note: null;" in after


def test_shapes_merge_across_calls_and_never_hold_values() -> None:
    sb = Sandbox(bindings=[get_order], result_shapes=True)
    res = sb.run(
        "[await tools.get_order({order_id: 'A1'}), await tools.get_order({order_id: 'B2'})]"
    )
    assert res.ok
    text = sb.describe_tools()
    assert "note: string | null;" in text  # null once, a string once
    assert "coupon?: string;" in text  # seen in one result of two: optional
    assert "gift?: boolean" in text
    assert "id: string;" in text  # seen every time: required
    for value in ("SECRET-SKU", "TOPSECRET10", "ann@example.com", "leave at the door", "9.5"):
        assert value not in text
    assert sb.result_shapes is not None and sb.result_shapes.calls("get_order") == 2


def test_data_keys_and_depth_are_bounded() -> None:
    @binding
    def stock() -> dict:  # type: ignore[type-arg]
        # keys that are data (SKUs, emails) and a deep chain
        deep: dict[str, Any] = {"leaf": 1}
        for _ in range(20):
            deep = {"next": deep}
        return {
            "by_sku": {"SKU-1": 3, "SKU-2": 5},
            "by_user": {"ann@example.com": {"n": 1}},
            "many": {f"k{i}": i for i in range(100)},
            "deep": deep,
        }

    shapes = ResultShapes(max_depth=4, max_keys=40)
    sb = Sandbox(bindings=[stock], result_shapes=shapes)
    assert sb.run("await tools.stock()").ok
    text = sb.describe_tools()
    assert "by_sku: Record<string, number>;" in text
    assert "by_user: Record<string, { n: number }>;" in text
    assert "many: Record<string, number>;" in text
    assert "SKU-1" not in text and "ann@example.com" not in text and "k99" not in text
    assert "leaf" not in text and "unknown" in text  # cut at depth 4


def test_one_shapes_store_serves_many_sandboxes() -> None:
    changed: list[str] = []
    shapes = ResultShapes(on_change=changed.append)
    assert (
        Sandbox(bindings=[get_order], result_shapes=shapes)
        .run("await tools.get_order({order_id: 'A1'})")
        .ok
    )
    assert changed == ["get_order"]
    other = Sandbox(bindings=[get_order], result_shapes=shapes)
    assert "customer: { email: string; vip: boolean };" in other.describe_tools()
    assert other.run("await tools.get_order({order_id: 'A1'})").ok
    assert changed == ["get_order"]  # the same shape again: nothing new


def test_large_results_are_not_read() -> None:
    @binding
    def blob() -> dict:  # type: ignore[type-arg]
        return {"data": "x" * 5000}

    sb = Sandbox(bindings=[blob], result_shapes=ResultShapes(max_bytes=1000))
    assert sb.run("(await tools.blob()).data.length").value == 5000
    assert "blob(): Promise<unknown>;" in sb.describe_tools()
