"""Large tool sets: a compact declaration, and tools.$describe / tools.$search."""

from __future__ import annotations

import json

from clambot_tools import Binding, Policy, Sandbox, binding


def _tool(i: int) -> Binding:
    def run(order_id: str, amount_eur: float = 0.0) -> dict[str, float]:
        return {"amount_eur": amount_eur}

    kind = ["lookup", "refund", "ship", "invoice", "cancel"][i % 5]
    return binding(
        run,
        name=f"{kind}_order_{i}",
        description=f"{kind.capitalize()} an order of shop {i}. Works for every country.",
        effects=("write",) if kind == "refund" else ("read",),
    )


TOOLS = [_tool(i) for i in range(60)]


def test_a_large_tool_set_is_declared_by_name_and_summary() -> None:
    sb = Sandbox(bindings=TOOLS, policy=Policy(auto_approve=("write",)))
    full = sb.describe_tools(max_chars=None)
    compact = sb.describe_tools()  # over the default budget: names and summaries
    assert len(full) > 8000 >= len(compact)
    for b in TOOLS:
        assert f"  {b.name}: Tool; // " in compact
    assert "// Refund an order of shop 1." in compact  # the first sentence only
    assert "Works for every country" not in compact
    assert 'await tools.$describe("name")' in compact and "tools.$search" in compact
    assert "amount_eur" not in compact  # no argument types in the prompt


def test_the_compact_declaration_shrinks_to_fit() -> None:
    sb = Sandbox(bindings=TOOLS)
    for budget in (4000, 2000, 800):
        assert len(sb.describe_tools(max_chars=budget)) <= budget
    assert "refund_order_1: Tool;" in sb.describe_tools(max_chars=2000)  # names only
    assert "60 tools" in sb.describe_tools(max_chars=800)  # a count, and how to look up


def test_a_script_reads_the_declarations_it_needs() -> None:
    sb = Sandbox(bindings=TOOLS, policy=Policy(auto_approve=("write",)))
    res = sb.run(
        'const one = await tools.$describe("refund_order_1");\n'
        'const two = await tools["$describe"](["ship_order_2", "cancel_order_4"]);\n'
        'const found = await tools.$search("refund shop 11");\n'
        "[one, two, found]"
    )
    assert res.ok, res.error
    one, two, found = res.value
    assert "refund_order_1(args: {" in one and "order_id: string;" in one
    assert "Works for every country" in one  # the whole description
    assert "ship_order_2(" in two and "cancel_order_4(" in two and "refund_order_1" not in two
    assert found.index("refund_order_11(") < found.index("refund_order_1(")  # best first
    assert "lookup_order" not in found


def test_describe_and_search_are_never_refused_nor_counted() -> None:
    policy = Policy(allow=["lookup_order_0"], max_calls=1)
    sb = Sandbox(bindings=TOOLS, policy=policy)
    res = sb.run(
        'const a = await tools.$search("order");\n'
        'const b = await tools.$describe("lookup_order_0");\n'
        "await tools.lookup_order_0({order_id: 'A1'});\n"
        "[a, b]"
    )
    assert res.ok, res.error
    assert res.stats.binding_calls == 1
    found, described = res.value
    assert "lookup_order_0(" in found and "refund" not in found  # only what is allowed
    assert "lookup_order_0(" in described
    hidden = sb.run('await tools.$describe("refund_order_1")')
    assert hidden.error is not None and hidden.error.kind == "binding_failed"
    assert "no tool named 'refund_order_1'" in hidden.error.message


def test_lookups_explain_their_mistakes() -> None:
    sb = Sandbox(bindings=TOOLS)
    typo = sb.run('await tools.$describe("lookup_ordr_0")')
    assert typo.error is not None and typo.error.name == "TypeError"
    assert "did you mean 'lookup_order_0'?" in typo.error.message
    bad = sb.run("await tools.$search(42)")
    assert bad.error is not None and "takes a string" in bad.error.message
    none = sb.run('await tools.$search("weather")')
    assert none.ok and none.value.startswith('// no tool matches "weather"')


def test_a_granted_tool_keeps_its_name() -> None:
    @binding(name="$search")
    def own_search(query: str) -> str:
        return f"mine: {query}"

    sb = Sandbox(bindings=[own_search])
    res = sb.run('[await tools.$search({query: "x"}), typeof tools.$describe]')
    assert res.value == ["mine: x", "function"]


def test_builtins_survive_sessions_and_snapshots() -> None:
    sb = Sandbox(bindings=TOOLS[:3])
    with sb.session() as s:
        assert "lookup_order_0(" in s.run('await tools.$describe("lookup_order_0")').value
        blob = s.snapshot()
    restored = sb.restore(blob)
    try:
        value = restored.run('await tools.$search("ship")').value
        assert "ship_order_2(" in value
    finally:
        restored.close()
    assert json.loads(json.dumps(value)) == value
