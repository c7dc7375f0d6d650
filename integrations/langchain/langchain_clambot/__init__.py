"""LangChain integration of ClamBot Tools: let a model write JavaScript that runs in a
sandbox with no ambient authority, calling your LangChain tools as ``await tools.x({...})``.

    >>> from langchain_clambot import SandboxedJSTool
    >>> js = SandboxedJSTool()
    >>> js.invoke({"code": "[1, 2, 3].map(x => x * 2)"})
    'Result (JSON): [2,4,6]'
"""

from typing import TYPE_CHECKING, Any

from clambot_tools.render import strip_code_fences

from ._approval import ApprovalInterrupt, langgraph_interrupt_approver
from ._scripts import SavedScriptTool, SaveScriptTool, save_script_tool, saved_script_tools
from ._sessions import JSSessionRecord, JSSessionState, merge_js_approvals, merge_js_sessions
from ._tool import SandboxedJSInput, SandboxedJSTool, SandboxToolError

#: this distribution's version (langchain-clambot), as in its metadata
__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._middleware import JSSessionMiddleware


def __getattr__(name: str) -> Any:
    """`JSSessionMiddleware` is imported when first used: it needs ``langchain``, the
    ``agents`` extra. Raises ImportError saying so when that is not installed."""
    if name == "JSSessionMiddleware":
        try:
            from ._middleware import JSSessionMiddleware
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "langchain":
                raise
            raise ImportError(
                "JSSessionMiddleware needs the langchain package: "
                "pip install 'langchain-clambot[agents]'"
            ) from exc
        return JSSessionMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApprovalInterrupt",
    "JSSessionMiddleware",
    "JSSessionRecord",
    "JSSessionState",
    "SandboxToolError",
    "SandboxedJSInput",
    "SandboxedJSTool",
    "SaveScriptTool",
    "SavedScriptTool",
    "langgraph_interrupt_approver",
    "merge_js_approvals",
    "merge_js_sessions",
    "save_script_tool",
    "saved_script_tools",
    "strip_code_fences",
]
