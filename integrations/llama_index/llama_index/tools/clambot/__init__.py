"""LlamaIndex tools for ClamBot Tools: agents run the JavaScript they write in a
QuickJS-NG/WebAssembly sandbox that reaches only the tools you grant.

    >>> from llama_index.tools.clambot import ClamBotToolSpec
    >>> [tool] = ClamBotToolSpec().to_tool_list()
    >>> tool.call(code="[1, 2, 3].map(x => x * 2)").content
    'Result (JSON): [2,4,6]'
"""

from .base import (
    TOOL_NAME,
    ClamBotTool,
    ClamBotToolSpec,
    RunJsSandboxedArgs,
    ToolCallError,
    binding_from_tool,
)
from .formatting import DEFAULT_MAX_CHARS, cap, format_run_result, strip_code_fences
from .scripts import SavedScriptTool, save_script_tool, saved_script_tools
from .tracing import ScriptToolCall, ScriptToolCallResult

#: this distribution's version (llama-index-tools-clambot), as in its metadata
__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_CHARS",
    "TOOL_NAME",
    "ClamBotTool",
    "ClamBotToolSpec",
    "RunJsSandboxedArgs",
    "SavedScriptTool",
    "ScriptToolCall",
    "ScriptToolCallResult",
    "ToolCallError",
    "binding_from_tool",
    "cap",
    "format_run_result",
    "save_script_tool",
    "saved_script_tools",
    "strip_code_fences",
]
