"""A scripted model for offline agent tests, on llama-index-core's MockFunctionCallingLLM.

Each chat call runs the next step of the script: a function of the messages the model
was sent that returns the model's reply. Two reply styles: function calling (tool call
blocks, for FunctionAgent and AgentWorkflow) and ReAct text (for ReActAgent).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM

Step = Callable[[Sequence[ChatMessage]], ChatMessage]


class Script:
    """The model's turns, in order; records what it was sent."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[list[ChatMessage], dict[str, Any]]] = []

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.calls.append((list(messages), kwargs))
        if not self.steps:
            raise AssertionError("the model was called more often than scripted")
        return self.steps.pop(0)(messages)

    def llm(self) -> MockFunctionCallingLLM:
        return MockFunctionCallingLLM(response_generator=self)

    @property
    def done(self) -> bool:
        return not self.steps


class Style:
    """How a model phrases a tool call and an answer, and where it reads a tool's output."""

    @staticmethod
    def call(tool: str, **kwargs: Any) -> ChatMessage:
        raise NotImplementedError

    @staticmethod
    def answer(text: str) -> ChatMessage:
        raise NotImplementedError

    @staticmethod
    def observation(messages: Sequence[ChatMessage]) -> str:
        raise NotImplementedError

    @staticmethod
    def tools_shown(script: Script) -> str:
        raise NotImplementedError


class FunctionCalling(Style):
    """Replies of a function-calling model."""

    @staticmethod
    def call(tool: str, **kwargs: Any) -> ChatMessage:
        block = ToolCallBlock(
            tool_call_id=f"call-{uuid.uuid4().hex[:8]}", tool_name=tool, tool_kwargs=kwargs
        )
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])

    @staticmethod
    def answer(text: str) -> ChatMessage:
        return ChatMessage(role=MessageRole.ASSISTANT, content=text)

    @staticmethod
    def observation(messages: Sequence[ChatMessage]) -> str:
        last = messages[-1]
        assert last.role == MessageRole.TOOL, f"expected a tool result, got {last.role}"
        return last.content or ""

    @staticmethod
    def tools_shown(script: Script) -> str:
        """The tool descriptions the model was given on its first turn."""
        tools: Sequence[Any] = script.calls[0][1].get("tools") or []
        return "\n".join(str(t.metadata.description) for t in tools)


class ReAct(Style):
    """Replies of a text-only model following the ReAct format."""

    @staticmethod
    def call(tool: str, **kwargs: Any) -> ChatMessage:
        text = f"Thought: I need to use a tool.\nAction: {tool}\nAction Input: {json.dumps(kwargs)}"
        return ChatMessage(role=MessageRole.ASSISTANT, content=text)

    @staticmethod
    def answer(text: str) -> ChatMessage:
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            content=f"Thought: I can answer without using any more tools.\nAnswer: {text}",
        )

    @staticmethod
    def observation(messages: Sequence[ChatMessage]) -> str:
        last = messages[-1].content or ""
        assert last.startswith("Observation:"), f"expected an observation, got {last!r}"
        return last.removeprefix("Observation:").strip()

    @staticmethod
    def tools_shown(script: Script) -> str:
        """The system prompt of the first turn, where ReAct lists the tools."""
        return script.calls[0][0][0].content or ""
