"""LangChain's standard tool tests (langchain-tests), unit and integration."""

from __future__ import annotations

from typing import Any

from clambot_tools import Limits
from langchain_core.tools import BaseTool, tool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from langchain_clambot import SandboxedJSTool


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


_PARAMS: dict[str, Any] = {"tools": [add], "limits": Limits(timeout_s=2)}
_EXAMPLE = {"code": "const s = await tools.add({a: 2, b: 3}); ({sum: s})"}


class TestSandboxedJSToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return SandboxedJSTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return _PARAMS

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return _EXAMPLE


class TestSandboxedJSToolIntegration(ToolsIntegrationTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return SandboxedJSTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return _PARAMS

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return _EXAMPLE
