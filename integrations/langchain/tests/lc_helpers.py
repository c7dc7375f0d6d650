"""Helpers of the langchain-clambot tests: a scripted chat model and tool calls.

No test touches the network: the chat model is scripted and the tools are local.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage


class ScriptedChatModel(GenericFakeChatModel):
    """GenericFakeChatModel answers with the messages it is given, in order; it has no
    `bind_tools`, which `create_agent` needs: binding tools changes nothing here."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def scripted(*messages: AIMessage) -> ScriptedChatModel:
    """A chat model that answers with `messages`, one per call."""
    it: Iterator[AIMessage | str] = iter(messages)
    return ScriptedChatModel(messages=it)


def js_call(code: str, call_id: str, name: str = "run_js_sandboxed") -> AIMessage:
    """An AIMessage asking to run `code` with the sandboxed JS tool."""
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": {"code": code}, "id": call_id, "type": "tool_call"}],
    )


def js_calls(*calls: tuple[str, str], name: str = "run_js_sandboxed") -> AIMessage:
    """An AIMessage asking to run several scripts at once: (code, call id) pairs."""
    return AIMessage(
        content="",
        tool_calls=[
            {"name": name, "args": {"code": code}, "id": call_id, "type": "tool_call"}
            for code, call_id in calls
        ],
    )


def session_agent(model: Any, checkpointer: Any = None, **tool_kwargs: Any) -> Any:
    """A create_agent agent whose SandboxedJSTool keeps a session per thread."""
    from langchain.agents import create_agent

    from langchain_clambot import JSSessionMiddleware, SandboxedJSTool

    js = SandboxedJSTool(sessions=True, **tool_kwargs)
    return create_agent(model, [js], middleware=[JSSessionMiddleware()], checkpointer=checkpointer)
