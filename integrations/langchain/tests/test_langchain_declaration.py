"""What the model reads about granted LangChain tools, and how strictly their arguments
are checked: real agent loops (create_agent) driven by scripted chat models."""

from __future__ import annotations

import datetime
import decimal
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pytest
from clambot_tools import ConfigError, Policy
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolArg, InjectedToolCallId, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.prebuilt import InjectedState, InjectedStore
from lc_helpers import ScriptedChatModel, js_call, scripted
from pydantic import Field

from langchain_clambot import SandboxedJSTool


class OrderLine(typing.TypedDict):
    sku: str
    quantity: int
    line_total: float


class Order(typing.TypedDict):
    id: str
    status: Literal["open", "shipped"]
    lines: list[OrderLine]


@tool
def get_order(order_id: int) -> Order:
    """Get an order by its number."""
    return {
        "id": str(order_id),
        "status": "open",
        "lines": [{"sku": "A", "quantity": 2, "line_total": 19.0}],
    }


@tool
def list_orders(status: Literal["open", "shipped"] | None = None) -> list[Order]:
    """List orders."""
    return [get_order.invoke({"order_id": 1042})]


@tool
def get_invoice(order_id: int) -> dict:  # type: ignore[type-arg]
    """Get an order's invoice."""
    return {"order_id": order_id, "total_eur": 19.0, "paid": True}


def tool_messages(out: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def test_script_arguments_are_checked_as_strictly_as_a_native_binding() -> None:
    js = SandboxedJSTool(tools=[get_order])
    model = scripted(
        js_call("await tools.get_order({order_id: '1042'})", "c1"),
        js_call("await tools.get_order({order_id: 1042, expand: true})", "c2"),
        js_call("(await tools.get_order({order_id: 1042})).lines[0].line_total", "c3"),
        AIMessage(content="19 euros"),
    )
    out = create_agent(model, [js]).invoke({"messages": [HumanMessage("total?")]})
    as_string, extra_key, right = tool_messages(out)
    assert as_string.status == "error"
    assert "order_id: must be integer, not a string" in str(as_string.content)
    assert extra_key.status == "error"
    assert "expand: Extra inputs are not permitted" in str(extra_key.content)
    assert right.status == "success" and right.content == "Result (JSON): 19"


def test_declaration_types_results_and_declares_shared_types_once() -> None:
    js = SandboxedJSTool(tools=[get_order, list_orders])
    decl = js.describe_tools()
    assert decl in js.description
    assert "get_order(args: { order_id: number }): Promise<Order>;" in decl
    assert "list_orders(args?: { status?: Status }): Promise<Order[]>;" in decl
    assert decl.count("interface Order {") == 1 and decl.count("sku: string") == 1
    assert 'type Status = "open" | "shipped";' in decl


def test_description_is_short_and_says_what_the_model_must_know() -> None:
    js = SandboxedJSTool(tools=[get_order])
    prose = js.description.replace(js.describe_tools(), "")
    for must in (
        "JavaScript, not Python, not TypeScript",
        "last expression",
        "Top-level `await` works",
        "one object of named arguments",
        "Limits: 5 s per run (tool calls included), 64 MiB",
        "Each run starts fresh",
    ):
        assert must in prose, must
    assert len(prose) < 900  # it was 1,250 characters
    assert "`await tools.name({...})`" in js.describe_tools()  # said once, in its header
    schema = convert_to_openai_tool(js)["function"]["parameters"]
    assert schema["properties"]["code"]["description"] == (
        "The JavaScript program; its last expression is the result."
    )


def test_only_tools_the_policy_allows_are_declared() -> None:
    js = SandboxedJSTool(tools=[get_order, get_invoice], policy=Policy(allow=["get_order"]))
    assert "get_invoice" not in js.description and "get_order(" in js.description


def test_results_beyond_json_reach_the_script_as_pydantic_encodes_them() -> None:
    @tool
    def when(order_id: int) -> dict:  # type: ignore[type-arg]
        """When an order was placed."""
        return {
            "at": datetime.datetime(2024, 5, 6, 7, 8, 9),
            "total": decimal.Decimal("12.50"),
            "tags": {"gift"},
        }

    js = SandboxedJSTool(tools=[when])
    out = js.invoke({"code": "const w = await tools.when({order_id: 1}); [w.at, w.total, w.tags]"})
    assert out == 'Result (JSON): ["2024-05-06T07:08:09","12.50",["gift"]]'


class RecordingModel(ScriptedChatModel):
    """A scripted model that records the tool descriptions bound at each model call."""

    seen: list[str] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RecordingModel:
        self.seen.append(
            "\n".join(convert_to_openai_tool(t)["function"]["description"] for t in tools)
        )
        return self


def test_learned_result_shapes_reach_the_next_model_call() -> None:
    js = SandboxedJSTool(tools=[get_invoice], result_shapes=True)
    assert "get_invoice(args: { order_id: number }): Promise<unknown>;" in js.description
    model = RecordingModel(
        messages=iter(
            [
                js_call("await tools.get_invoice({order_id: 7})", "c1"),
                js_call("(await tools.get_invoice({order_id: 8})).total_eur", "c2"),
                AIMessage(content="19 euros"),
            ]
        )
    )
    out = create_agent(model, [js]).invoke({"messages": [HumanMessage("invoice?")]})
    assert [m.status for m in tool_messages(out)] == ["success", "success"]
    first, second = model.seen[0], model.seen[1]
    assert "Promise<unknown>" in first and "total_eur" not in first
    assert "total_eur: number" in second and "(result shape observed from earlier calls)" in second
    assert "19.0" not in second  # shapes, never values


# -- tools that need what LangGraph injects


@tool
def whoami(runtime: ToolRuntime) -> str:
    """Say which thread this is."""
    return str(runtime.config.get("configurable", {}).get("thread_id"))


@tool
def with_state(question: str, state: Annotated[dict, InjectedState]) -> int:  # type: ignore[type-arg]
    """Count the messages so far."""
    return len(state["messages"])


@tool
def with_call_id(x: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Echo the call id."""
    return tool_call_id


@tool
def with_store(key: str, store: Annotated[Any, InjectedStore()]) -> str:
    """Read the store."""
    return key


@tool
def with_user(x: int, user_id: Annotated[str, InjectedToolArg]) -> str:
    """Use an injected user id."""
    return user_id


@pytest.mark.parametrize(
    ("injected_tool", "param"),
    [
        (whoami, "runtime"),
        (with_state, "state"),
        (with_call_id, "tool_call_id"),
        (with_store, "store"),
        (with_user, "user_id"),
    ],
    ids=["ToolRuntime", "InjectedState", "InjectedToolCallId", "InjectedStore", "InjectedToolArg"],
)
def test_tools_that_need_injected_arguments_are_refused_at_construction(
    injected_tool: Any, param: str
) -> None:
    with pytest.raises(ConfigError) as info:
        SandboxedJSTool(tools=[get_order, injected_tool])
    message = str(info.value)
    assert f"tool {injected_tool.name!r} takes {param!r}" in message
    assert "a script cannot supply it" in message
    assert "Give this tool to the agent directly" in message


def test_an_injected_argument_with_a_default_is_granted() -> None:
    @tool
    def maybe_user(x: int, user_id: Annotated[str, InjectedToolArg] = "nobody") -> str:
        """Use an injected user id, or nobody."""
        return f"{x}:{user_id}"

    js = SandboxedJSTool(tools=[maybe_user])
    assert js.invoke({"code": "await tools.maybe_user({x: 1})"}) == 'Result (JSON): "1:nobody"'


def test_an_agent_keeps_injected_tools_beside_the_sandbox() -> None:
    """The pattern the refusal message points to, in a real agent loop: the tool that
    needs LangGraph's runtime is the agent's own, the others are granted to scripts."""
    js = SandboxedJSTool(tools=[get_order])
    model = scripted(
        AIMessage(
            content="",
            tool_calls=[{"name": "whoami", "args": {}, "id": "w1", "type": "tool_call"}],
        ),
        js_call("(await tools.get_order({order_id: 5})).status", "c1"),
        AIMessage(content="done"),
    )
    agent = create_agent(model, [js, whoami])
    out = agent.invoke(
        {"messages": [HumanMessage("go")]}, config={"configurable": {"thread_id": "t-9"}}
    )
    direct, script = tool_messages(out)
    assert direct.status == "success" and direct.content == "t-9"
    assert script.status == "success" and script.content == 'Result (JSON): "open"'


def test_a_script_reads_full_declarations_with_result_types() -> None:
    """tools.$describe inside a run sees what describe_tools() sees (result types too),
    for LangChain tools and plain bindings, in plain runs and in sessions."""

    def stock(sku: str) -> OrderLine:
        """Stock of a SKU."""
        return {"sku": sku, "quantity": 3, "line_total": 0.0}

    code = 'await tools.$describe(["get_order", "stock"])'
    plain = SandboxedJSTool(tools=[get_order], bindings=[stock])
    out = plain.invoke({"code": code})
    for text in (out, plain.describe_tools()):
        assert "get_order(args: { order_id: number }): Promise<" in text
        assert "stock(args: { sku: string }): Promise<OrderLine>;" in text
        assert "interface OrderLine { sku: string; quantity: number; line_total: number }" in (
            text.replace("\\n", "\n")
        )
        assert "Promise<unknown>" not in text

    from langchain_clambot import JSSessionMiddleware

    js = SandboxedJSTool(tools=[get_order], bindings=[stock], sessions=True)
    model = scripted(js_call(code, "c1"), AIMessage(content="ok"))
    agent = create_agent(model, [js], middleware=[JSSessionMiddleware()])
    (message,) = tool_messages(agent.invoke({"messages": [HumanMessage("go")]}))
    assert message.status == "success"
    assert "stock(args: { sku: string }): Promise<OrderLine>;" in str(message.content)
    assert "Promise<unknown>" not in str(message.content)
