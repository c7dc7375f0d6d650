"""What a LlamaIndex agent reads back after the typical mistakes: a FunctionAgent with a
scripted model sends one faulty script per turn and records each ToolOutput's content,
which names the failing call (where there is one), the line, and a hint that fits.

Run with ``-s`` to read the transcript: it is printed as documentation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypedDict

from li_scripted_llm import FunctionCalling, Script, Step
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool

from llama_index.tools.clambot import ClamBotToolSpec


class Line(TypedDict):
    sku: str
    qty: int
    line_total: float


class Order(TypedDict):
    id: str
    status: str
    items: list[Line]


def get_order(order_id: str) -> Order:
    """Get one order by its id."""
    if order_id == "A-13":
        raise LookupError(f"no order with id {order_id}")
    return {
        "id": order_id,
        "status": "open",
        "items": [{"sku": "tea", "qty": 2, "line_total": 7.5}],
    }


ONE = "await tools.get_order"
# (the mistake, the script, what the model must read: the call, the line, the hint)
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "wrong argument name",
        f"const o = {ONE}({{id: 'A-1'}});\no.status",
        ('tools.get_order({"id":"A-1"}) has invalid arguments', "At line 1", "declaration"),
    ),
    # LlamaIndex's FunctionTool schemas ignore keys they do not declare (its own choice;
    # the LangChain tool refuses them): the call runs without `verbose`, nothing to hint
    ("extra argument", f"({ONE}({{order_id: 'A-1', verbose: true}})).status", ()),
    (
        "wrong type",
        f"const o = {ONE}({{order_id: 42}});\no.status",
        ("order_id: Input should be a valid string", "At line 1", "names and types"),
    ),
    (
        "positional argument",
        f"const o = {ONE}('A-1');\no.status",
        ('tools.get_order("A-1") takes one object', "At line 1", "Pass tools.get_order one"),
    ),
    (
        "a tool that raises in a loop of 20",
        "let n = 0;\nfor (let i = 0; i < 20; i++) {\n  n += (await tools.get_order("
        "{order_id: 'A-' + i})).items.length;\n}\nn",
        ("no order with id A-13", "At line 3", "try/catch around that call"),
    ),
    (
        "misspelt tool",
        "const o = await tools.getOrder({order_id: 'A-1'});\no",
        (
            "tools.getOrder is not a granted tool (did you mean get_order?)",
            "At line 1",
            "There is no",
        ),
    ),
    (
        "forgotten await",
        "const o = tools.get_order({order_id: 'A-1'});\no.items.length",
        (
            "cannot read property 'length' of undefined",
            "At line 2",
            "Hint: A tool call is not awaited: `o = tools.get_order(...)` on line 1 needs",
        ),
    ),
    (
        "misspelt result field",
        f"const o = {ONE}({{order_id: 'A-1'}});\no.items.map(i => i.qtty * 2)",
        ("Result (JSON): [NaN]", "`.qtty` on line 2", "(it declares `qty`)"),
    ),
    (
        "TypeScript annotation",
        "function total(o: Order): number {\n  return o.items.length\n}\n1",
        ("SyntaxError", "At line 1", "That is TypeScript"),
    ),
    (
        "syntax error",
        f"const o = {ONE}({{order_id: 'A-1'}};\no",
        ("SyntaxError", "At line 1", "Fix the syntax"),
    ),
    (
        "a top-level return",
        f"const o = {ONE}({{order_id: 'A-1'}});\nreturn o.status",
        ("return not in a function", "At line 2", "end the script with the expression"),
    ),
]


def test_what_the_agent_reads_after_each_typical_mistake() -> None:
    seen: list[str] = []

    def turn(i: int) -> Step:
        def step(messages: Sequence[ChatMessage]) -> ChatMessage:
            if i:
                seen.append(FunctionCalling.observation(messages))
            if i == len(CASES):
                return FunctionCalling.answer("Done.")
            return FunctionCalling.call("run_js_sandboxed", code=CASES[i][1])

        return step

    script = Script(*(turn(i) for i in range(len(CASES) + 1)))
    spec = ClamBotToolSpec([FunctionTool.from_defaults(get_order)])
    agent = FunctionAgent(tools=[*spec.to_tool_list()], llm=script.llm())

    async def main() -> list[ToolCallResult]:
        handler = agent.run(user_msg="Check the orders.")
        results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
        await handler
        # the agent's own tool calls (the script's calls of get_order stream events too)
        return [r for r in results if r.tool_name == "run_js_sandboxed"]

    results = asyncio.run(main())
    assert script.done and len(seen) == len(CASES)
    print("\nWhat the agent reads back (LlamaIndex ToolOutput content):")
    for (what, code, says), text, result in zip(CASES, seen, results, strict=True):
        print(f"\n--- {what} ---\n{code}\n>>> is_error={result.tool_output.is_error}\n{text}")
        assert text == result.tool_output.content
        for expected in says:
            assert expected in text, (what, expected)
        assert ("Hint: " in text) is bool(says)
        text.encode("utf-8")
