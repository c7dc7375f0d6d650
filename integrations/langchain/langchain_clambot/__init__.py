"""LangChain integration of ClamBot Tools: let a model write JavaScript that runs in a
sandbox with no ambient authority, calling your LangChain tools as ``await tools.x({...})``.

    >>> from langchain_clambot import SandboxedJSTool
    >>> js = SandboxedJSTool()
    >>> js.invoke({"code": "[1, 2, 3].map(x => x * 2)"})
    'Result (JSON): [2,4,6]'
"""

from ._approval import ApprovalInterrupt, langgraph_interrupt_approver
from ._fences import strip_code_fences
from ._tool import SandboxedJSInput, SandboxedJSTool, SandboxToolError

__all__ = [
    "ApprovalInterrupt",
    "SandboxToolError",
    "SandboxedJSInput",
    "SandboxedJSTool",
    "langgraph_interrupt_approver",
    "strip_code_fences",
]
