"""JSSessionMiddleware: the ``js_session`` state key for ``create_agent``.

Imported only when used: it needs the ``langchain`` package (``langchain.agents``).
"""

from __future__ import annotations

from typing import Any

from langchain.agents import AgentState
from langchain.agents.middleware import AgentMiddleware

from ._sessions import JSSessionState


class JSSessionAgentState(AgentState[Any], JSSessionState):
    """``create_agent``'s state with the ``js_session`` key."""


class JSSessionMiddleware(AgentMiddleware[JSSessionAgentState, Any, Any]):
    """Adds the ``js_session`` key, where ``SandboxedJSTool(sessions=True)`` keeps each
    thread's JavaScript session, to the state of a ``create_agent`` agent. It has no
    hooks and registers no tool: pass the tool in ``tools`` as usual.

        >>> js = SandboxedJSTool(sessions=True)
        >>> agent = create_agent(model, [js], middleware=[JSSessionMiddleware()],
        ...                      checkpointer=checkpointer)
    """

    state_schema = JSSessionAgentState
