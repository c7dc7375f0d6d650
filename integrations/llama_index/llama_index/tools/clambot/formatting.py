"""The text a run becomes for a LlamaIndex agent: ``clambot_tools.render``'s, with this
package's budget (one cap on the whole text, ``max_output_chars``).

`strip_code_fences` and `cap` are ``clambot_tools.render``'s, re-exported for tools of
your own.
"""

from __future__ import annotations

from collections.abc import Sequence

from clambot_tools import Binding, RunResult
from clambot_tools.render import cap, model_text, strip_code_fences

__all__ = ["DEFAULT_MAX_CHARS", "cap", "format_run_result", "strip_code_fences"]

#: the default cap, in characters, of the text a run's result becomes
DEFAULT_MAX_CHARS = 4000


def format_run_result(
    result: RunResult,
    code: str | None = None,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    tool_names: Sequence[str] | None = None,
    tools: Sequence[Binding] = (),
) -> str:
    """A RunResult as the compact text a model reads in a tool output
    (``clambot_tools.render.model_text``), within about `max_chars` characters.

    Success: ``Result (JSON): <value>``, then the console output if there was any.
    Failure: the error's kind, name and message, where it happened with a code frame
    taken from `code` (the script as it ran; without it, no frame), the logs, and a hint
    fitted to the error (`tools`, the granted bindings, let it name a misspelt field).
    The script itself is never repeated; what is cut says how much. `tool_names` is no
    longer needed (the message of a call to a missing tool lists the granted ones) and
    is ignored.
    """
    del tool_names
    limit = max(400, max_chars)
    return model_text(
        result, code, max_value_chars=limit, max_log_chars=limit, max_chars=limit, tools=tools
    )
