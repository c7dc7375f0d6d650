"""What the model reads about the granted tools: a description within OpenAI's 1,024
characters, the rest through tools.$describe / tools.$search or the system prompt, and
result types from FunctionTool return annotations. Agents run offline (scripted model)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import typing
from collections.abc import Sequence
from typing import Any, Literal

from clambot_tools import Policy
from li_scripted_llm import FunctionCalling, Script
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from pydantic import Field

from llama_index.tools.clambot import ClamBotToolSpec, binding_from_tool


class OpenAIShapedLLM(MockFunctionCallingLLM):
    """A scripted model that turns its tools into OpenAI tool definitions first, as
    llama-index-llms-openai does (``metadata.to_openai_tool()``, which refuses a
    description over 1,024 characters)."""

    definitions: list[dict[str, Any]] = Field(default_factory=list)

    def _prepare_chat_with_tools(
        self, tools: Sequence[Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        self.definitions[:] = [t.metadata.to_openai_tool() for t in tools]
        return super()._prepare_chat_with_tools(tools, *args, **kwargs)


def _shop_fn(name: str) -> Any:
    def fn(order_id: str, amount_eur: float = 0.0) -> dict[str, Any]:
        return {"tool": name, "order_id": order_id, "amount_eur": amount_eur}

    return fn


def shop_tools(n: int) -> list[Any]:
    tools: list[Any] = []
    for i in range(n):
        kind = ["lookup", "refund", "ship"][i % 3]
        tool = FunctionTool.from_defaults(
            _shop_fn(f"{kind}_{i}"),
            name=f"{kind}_order_{i}",
            description=f"{kind.capitalize()} an order of shop {i}.",
        )
        tools.append(binding_from_tool(tool, effects=("write",)) if kind == "refund" else tool)
    return tools


def test_the_default_description_fits_openai_with_any_number_of_tools() -> None:
    for n in (2, 5, 30, 200):
        spec = ClamBotToolSpec(shop_tools(n), policy=Policy(approve=lambda r: True))
        meta = spec.to_tool_list()[0].metadata
        assert len(meta.description) <= 1024, n
        meta.to_openai_tool()  # raises ValueError past 1,024 characters
        assert "JavaScript, not Python, not TypeScript" in meta.description
        assert "await tools.name({...})" in meta.description
    # the declaration shrinks as tools are added: whole, summaries, names, a count
    two = ClamBotToolSpec(shop_tools(2)).tool_description
    assert "lookup_order_0(args: {\n    order_id: string;" in two
    three = ClamBotToolSpec(shop_tools(3)).tool_description
    assert "  lookup_order_0: Tool; // Lookup an order of shop 0." in three
    ten = ClamBotToolSpec(shop_tools(10)).tool_description
    assert "lookup_order_0: Tool; refund_order_1: Tool;" in ten
    thirty = ClamBotToolSpec(shop_tools(30)).tool_description
    assert "// 30 tools" in thirty
    for text in (three, ten, thirty):
        assert 'await tools.$describe("name")' in text and 'await tools.$search("words")' in text


def test_the_system_prompt_helper_carries_the_whole_declaration() -> None:
    spec = ClamBotToolSpec(shop_tools(30))
    prompt = spec.system_prompt()
    assert "run_js_sandboxed" in prompt and "write JavaScript" in prompt
    for i in (0, 15, 29):
        assert f"_order_{i}(args: {{\n    order_id: string;\n    amount_eur?: number;" in prompt


def test_a_function_agent_finds_a_tool_with_search_then_calls_it() -> None:
    spec = ClamBotToolSpec(shop_tools(30), policy=Policy(auto_approve=("write",)))
    found: list[str] = []

    def read_search(messages: Sequence[ChatMessage]) -> ChatMessage:
        text = FunctionCalling.observation(messages)
        found.append(text)
        assert "refund_order_13(args: {\n    order_id: string;\n    amount_eur?: number;" in text
        return FunctionCalling.call(
            "run_js_sandboxed",
            code="await tools.refund_order_13({order_id: 'A-1', amount_eur: 5})",
        )

    script = Script(
        lambda m: FunctionCalling.call("run_js_sandboxed", code='await tools.$search("refund 13")'),
        read_search,
        lambda m: FunctionCalling.answer("Refunded."),
    )
    # a constructor argument of the mock, not a field: pydantic's typing cannot see it
    llm = OpenAIShapedLLM(response_generator=script)  # type: ignore[call-arg]
    agent = FunctionAgent(tools=[*spec.to_tool_list()], llm=llm)

    async def main() -> list[ToolCallResult]:
        handler = agent.run(user_msg="Refund 5 euros on order A-1 of shop 13.")
        results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
        await handler
        return results

    results = asyncio.run(main())
    assert script.done and found
    assert len(llm.definitions) == 1  # the agent's tool, as OpenAI gets it
    assert len(llm.definitions[0]["function"]["description"]) <= 1024
    last = results[-1].tool_output.raw_output
    assert last.ok and last.value == {"tool": "refund_13", "order_id": "A-1", "amount_eur": 5.0}


# -- result types from FunctionTool return annotations


class Slot(typing.TypedDict):
    start: str
    free: bool


@dataclasses.dataclass
class Booking:
    id: str
    at: datetime.datetime
    room: Literal["small", "large"]


def test_typed_results_are_declared_and_reach_the_script() -> None:
    def slots(day: str) -> list[Slot]:
        """Free slots on a day."""
        return [{"start": f"{day}T09:00", "free": True}]

    def book(start: str) -> Booking:
        """Book a room."""
        return Booking(id="B1", at=datetime.datetime(2024, 5, 6, 9), room="small")

    spec = ClamBotToolSpec([FunctionTool.from_defaults(slots), FunctionTool.from_defaults(book)])
    decl = spec.describe_tools()
    assert "slots(args: { day: string }): Promise<{ start: string; free: boolean }[]>;" in decl
    assert 'Promise<{ id: string; at: string; room: "small" | "large" }>;' in decl
    assert "/** Book a room. */" in decl and "-> " not in decl  # no Python signature
    out = spec.run_js_sandboxed("const b = await tools.book({start: 'x'}); [b.id, b.at, b.room]")
    assert out.value == ["B1", "2024-05-06T09:00:00", "small"]


def test_learned_result_shapes_update_the_description() -> None:
    def invoice(order_id: str) -> dict[str, Any]:
        """Get an invoice."""
        return {"order_id": order_id, "total_eur": 12.5}

    spec = ClamBotToolSpec([FunctionTool.from_defaults(invoice)], result_shapes=True)
    tool = spec.to_tool_list()[0]
    assert "Promise<unknown>" in tool.metadata.description
    assert tool.call(code="await tools.invoice({order_id: 'A'})").raw_output.ok
    assert "Promise<{ order_id: string; total_eur: number }>" in tool.metadata.description
    assert "12.5" not in tool.metadata.description
    assert len(tool.metadata.description) <= 1024
