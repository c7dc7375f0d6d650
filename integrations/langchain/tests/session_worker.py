"""Another worker: continues a thread of a session agent whose checkpoints are in a
SQLite file, in a process that has never seen the thread.

    python session_worker.py DB_PATH THREAD_ID '["code of call 1", ...]'

Prints one JSON line: the status and content of each ToolMessage of this turn.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from lc_helpers import js_call, scripted, session_agent


def main() -> None:
    """Run one turn of the thread: the scripted model runs each script, then answers."""
    db, thread, codes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    calls = [js_call(code, f"w{i}") for i, code in enumerate(codes)]
    with sqlite3.connect(db, check_same_thread=False) as conn:
        agent = session_agent(scripted(*calls, AIMessage("done")), SqliteSaver(conn))
        before = len(
            agent.get_state({"configurable": {"thread_id": thread}}).values.get("messages", [])
        )
        out = agent.invoke(
            {"messages": [HumanMessage("go on")]}, {"configurable": {"thread_id": thread}}
        )
    new = [m for m in out["messages"][before:] if isinstance(m, ToolMessage)]
    print(json.dumps([[m.status, m.content] for m in new]))


if __name__ == "__main__":
    main()
