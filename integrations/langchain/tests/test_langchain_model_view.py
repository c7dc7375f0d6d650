"""What the model reads back after the typical mistakes, through a real agent loop
(``create_agent``, LangGraph underneath) driven by a scripted model: each ToolMessage
names the call that failed (where there is one), the line, and gives a hint that fits.

Run with ``-s`` to read the transcript: it is printed as documentation.
"""

from __future__ import annotations

from typing import NamedTuple, TypedDict

from clambot_tools import Limits
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from lc_helpers import js_call, scripted

from langchain_clambot import SandboxedJSTool


class Line(TypedDict):
    sku: str
    qty: int
    line_total: float


class Order(TypedDict):
    id: str
    status: str
    items: list[Line]


@tool
def get_order(order_id: str) -> Order:
    """Get one order by its id."""
    if order_id == "A-13":
        raise LookupError(f"no order with id {order_id}")
    return {
        "id": order_id,
        "status": "open",
        "items": [{"sku": "tea", "qty": 2, "line_total": 7.5}],
    }


class Mistake(NamedTuple):
    what: str
    code: str
    says: tuple[str, ...]  # the call, the line and the hint, as the model reads them


GET = "const o = await tools.get_order"
MISTAKES = [
    Mistake(
        "wrong argument name",
        f"{GET}({{id: 'A-1'}});\no.status",
        (
            'tools.get_order({"id":"A-1"}) has invalid arguments: order_id: Field required',
            "At line 1, column 22",
            "Hint: Give tools.get_order the arguments its declaration lists",
        ),
    ),
    Mistake(
        "extra argument",
        f"{GET}({{order_id: 'A-1', verbose: true}});\no.status",
        (
            'tools.get_order({"order_id":"A-1","verbose":true}) has invalid arguments: '
            "verbose: Extra inputs are not permitted",
            "At line 1, column 22",
            "no others); the call did not run, so fix it rather than catch it.",
        ),
    ),
    Mistake(
        "wrong type",
        f"{GET}({{order_id: 42}});\no.status",
        (
            'tools.get_order({"order_id":42}) has invalid arguments: order_id: must be string',
            "At line 1, column 22",
            "Hint: Give tools.get_order the arguments its declaration lists",
        ),
    ),
    Mistake(
        "positional argument",
        f"{GET}('A-1');\no.status",
        (
            'tools.get_order("A-1") takes one object of named arguments, not a string',
            "At line 1, column 22",
            "Hint: Pass tools.get_order one object of named arguments, as declared",
        ),
    ),
    Mistake(
        "a tool that raises in a loop of 20",
        "const out = [];\nfor (let i = 0; i < 20; i++) {\n"
        "  out.push(await tools.get_order({order_id: 'A-' + i}));\n}\nout.length",
        (
            'tools.get_order({"order_id":"A-13"}) failed: no order with id A-13',
            "At line 3, column 52",
            "Tool calls that completed before the error: tools.get_order x13.",
            "catch the error with try/catch around that call and carry on",
        ),
    ),
    Mistake(
        "misspelt tool",
        "const o = await tools.get_orders({order_id: 'A-1'});\no.status",
        (
            "tools.get_orders is not a granted tool (did you mean get_order?)",
            "At line 1, column 22",
            "Hint: There is no tools.get_orders: call one of the granted tools",
        ),
    ),
    Mistake(
        "forgotten await",
        "const o = tools.get_order({order_id: 'A-1'});\no",
        (
            "it contains a Promise (add await)",
            "`o = tools.get_order(...)` on line 1 needs `await tools.get_order(...)`",
        ),
    ),
    Mistake(
        "misspelt result field",
        f"{GET}({{order_id: 'A-1'}});\no.items.reduce((s, i) => s + i.line_totl, 0)",
        (
            "Result (JSON): NaN",
            "`.line_totl` on line 2: the result of tools.get_order has no field `line_totl`"
            " (it declares `line_total`)",
        ),
    ),
    Mistake(
        "TypeScript annotation",
        "const o: Order = await tools.get_order({order_id: 'A-1'});\no.status",
        (
            "Error (syntax): SyntaxError: missing initializer for variable",
            "At line 1, column 8",
            "Hint: That is TypeScript: write plain JavaScript",
        ),
    ),
    Mistake(
        "syntax error",
        "const ids = ['A-1', 'A-2';\nids.length",
        (
            "Error (syntax): SyntaxError:",
            "At line 1, column 26",
            "> 1 | const ids = ['A-1', 'A-2';",
            "Hint: Fix the syntax at the marked position",
        ),
    ),
]


def test_what_the_model_reads_after_each_typical_mistake() -> None:
    js = SandboxedJSTool(tools=[get_order], limits=Limits(timeout_s=3))
    model = scripted(
        *(js_call(m.code, f"call_{i}") for i, m in enumerate(MISTAKES)),
        AIMessage(content="Done."),
    )
    out = create_agent(model, [js]).invoke({"messages": [HumanMessage("Check the orders.")]})
    replies = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [r.tool_call_id for r in replies] == [f"call_{i}" for i in range(len(MISTAKES))]
    print("\nWhat the model reads back (LangChain ToolMessage content):")
    for mistake, reply in zip(MISTAKES, replies, strict=True):
        content = reply.content
        assert isinstance(content, str)
        print(f"\n--- {mistake.what} ---\n{mistake.code}\n>>> status={reply.status}\n{content}")
        for expected in mistake.says:
            assert expected in content, (mistake.what, expected)
        assert "Hint: " in content
        content.encode("utf-8")
    # a success that looks like a slip is still a success; everything else is an error
    assert [r.status for r in replies].count("success") == 1
