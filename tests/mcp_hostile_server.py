"""A hand-written MCP server over stdio that misbehaves on purpose (no SDK: it writes
the bytes itself).

    python tests/mcp_hostile_server.py LOG [--mute] [--stubborn]

It answers the handshake and ``tools/list``, then, by tool name:

* ``echo``: answers properly (to show the connection still works afterwards);
* ``silent``: never answers;
* ``flood``: answers with a 100 MB line, written in 1 MiB pieces;
* ``garbage``: writes a line that is not JSON at all, and never answers;
* ``malformed``: answers with broken JSON that carries the request's id;
* ``wrong_shape``: answers with valid JSON-RPC whose result is not a tool result;
* ``die``: exits in the middle of the call.

Every message it receives is appended to LOG (one JSON line each), so a test can see
what the client sent: ``notifications/cancelled`` in particular. With ``--mute`` it
answers nothing at all, not even the handshake. With ``--stubborn`` it ignores SIGTERM,
starts a child process of its own (tool ``child_pid`` tells its pid) and keeps running
after its stdin closes: only a kill of its whole process group stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

LOG = sys.argv[1]
MUTE = "--mute" in sys.argv
STUBBORN = "--stubborn" in sys.argv
CHILD: subprocess.Popen[bytes] | None = None
READ = {"readOnlyHint": True}
TOOLS = [
    {
        "name": name,
        "description": f"hostile: {name}",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": READ,
    }
    for name in (
        "echo",
        "silent",
        "flood",
        "garbage",
        "malformed",
        "wrong_shape",
        "die",
        "child_pid",
    )
]


def send(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(obj: object) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def call(rid: object, name: str) -> None:
    if name == "echo":
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}})
    elif name == "silent":
        pass
    elif name == "flood":
        head = json.dumps({"jsonrpc": "2.0", "id": rid})[:-1]
        sys.stdout.write(head + ', "result": {"content": [{"type": "text", "text": "')
        piece = "x" * (1 << 20)
        for _ in range(100):
            sys.stdout.write(piece)
        sys.stdout.write('"}]}}\n')
        sys.stdout.flush()
    elif name == "garbage":
        sys.stdout.write("this is not JSON at all\n")
        sys.stdout.flush()
    elif name == "malformed":
        sys.stdout.write('{"jsonrpc": "2.0", "id": ' + json.dumps(rid) + ', "result": {"cont\n')
        sys.stdout.flush()
    elif name == "wrong_shape":
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": "not a list of blocks"}})
    elif name == "die":
        os._exit(3)
    elif name == "child_pid":
        pid = CHILD.pid if CHILD is not None else 0
        send(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "result": {"content": [{"type": "text", "text": str(pid)}]},
            }
        )


def main() -> None:
    global CHILD
    if STUBBORN:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        CHILD = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    for line in sys.stdin:
        msg = json.loads(line)
        log(msg)
        if MUTE:
            continue
        method, rid = msg.get("method"), msg.get("id")
        if rid is None:
            continue  # a notification
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "result": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "hostile", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            call(rid, msg["params"]["name"])
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": rid, "result": {}})
        else:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": rid,
                    "error": {"code": -32601, "message": f"no method {method}"},
                }
            )
    if STUBBORN:  # stdin closed: stay anyway
        time.sleep(600)


if __name__ == "__main__":
    main()
