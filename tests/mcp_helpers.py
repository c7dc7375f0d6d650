"""What the MCP tests share: starting the test servers, and looking for leftovers
(child processes, threads) the way a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER = str(HERE / "mcp_server.py")
HOSTILE = str(HERE / "mcp_hostile_server.py")
#: generous: the machine is shared and slow, and every wait ends as soon as it can
PATIENCE_S = 30.0


def stdio_args() -> dict[str, object]:
    """MCPConnection keyword arguments for the test server over stdio."""
    return {"command": sys.executable, "args": [SERVER]}


class HttpServer:
    """The test server over streamable HTTP on 127.0.0.1 (a free port, or `port`)."""

    def __init__(self, *flags: str, port: int | None = None) -> None:
        argv = [sys.executable, SERVER, "--http", *flags]
        if port is not None:
            argv += ["--port", str(port)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once the socket listens
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the test MCP server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(PATIENCE_S)
        if self.process.stdout is not None:
            self.process.stdout.close()


def children() -> dict[int, str]:
    """This process's child processes: pid -> state (R, S, Z...), from /proc."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me:
            found[int(entry)] = state
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie, not reaped) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def mcp_threads() -> list[str]:
    """Names of the threads MCP connections run on."""
    return [t.name for t in threading.enumerate() if t.name.startswith("clambot-mcp")]


def wait_until(check: Callable[[], object], timeout: float = PATIENCE_S) -> bool:
    """Poll `check` until it is true or `timeout` passes; returns its last verdict."""
    end = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > end:
            return bool(check())
        time.sleep(0.02)


def peak_rss_reset() -> int:
    """Reset the process's peak RSS (Linux: /proc/self/clear_refs) and return the
    current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") * 1024


def peak_rss() -> int:
    """The process's peak RSS in bytes since the last `peak_rss_reset`."""
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)
