"""What the standard bindings leave behind when a run ends, and what they cost the host.

Run with any checkout's venv to compare two versions side by side, e.g.
``.venv/bin/python bench/stdlib.py`` here and ``/other/checkout/.venv/bin/python
bench/stdlib.py`` there. Figures:

- a runaway SQL query (two at once, recursive CTEs, binding timeout 30 s) under a
  0.5 s run: how long the queries go on after the run returned, and the CPU the
  process burns in the second after that (from 0.1 s to 1.1 s after the return);
- a request to a server that never answers (binding timeout 30 s) under a 0.5 s run:
  how long until the server sees the connection closed;
- ``fs_read_text`` of 156 kB with ``encoding: 'punycode'`` under a 1 s run, after a few
  fast calls of the same binding (so it runs inline): how long the run takes, and the
  CPU burnt after it returned;
- peak RSS growth of a fresh process running one, then 32 concurrent, ``sql_query``
  calls under the default 1 MiB result cap: of a 24 MiB blob, and of a 700 KiB blob
  selected twice (each value fits, the row does not);
- the cost of redacting two secrets from 1 MiB of response text.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import select
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import clambot_tools
from clambot_tools import Limits, Sandbox
from clambot_tools.stdlib import files, http, sql

RUNAWAY = (
    "WITH RECURSIVE r(x) AS (SELECT (SELECT count(*) FROM t) UNION ALL "
    "SELECT x + 1 FROM r) SELECT max(x) FROM r"
)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_for(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until `condition()` holds (checked every ms); `limit` if it never does."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.001)
    return limit


def cpu_in_window(start: float, begin: float, end: float) -> float:
    """CPU seconds this process used from `start + begin` to `start + end` (monotonic)."""
    time.sleep(max(0.0, start + begin - time.monotonic()))
    c0 = cpu_seconds()
    time.sleep(max(0.0, start + end - time.monotonic()))
    return cpu_seconds() - c0


def reading(db: Path) -> bool:
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def runaway_sql(tmp: Path, reps: int) -> dict[str, Any]:
    db = tmp / "runaway.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    sb = Sandbox(bindings=sql.bindings(db, timeout_s=30), limits=Limits(timeout_s=0.5))
    code = f"await Promise.all([0, 1].map(() => tools.sql_query({{sql: {RUNAWAY!r}}})))"
    after, cpu = [], []
    for _ in range(reps):  # how long the queries go on (polling costs CPU: apart)
        sb.run(code)
        returned = time.monotonic()
        wait_for(lambda: not reading(db), 40)
        after.append(time.monotonic() - returned)
    for _ in range(reps):  # the CPU burnt meanwhile
        sb.run(code)
        cpu.append(cpu_in_window(time.monotonic(), 0.1, 1.1))
        wait_for(lambda: not reading(db), 40)
    return {
        "queries_ran_on_s": statistics.median(after),
        "cpu_s_in_next_second": statistics.median(cpu),
    }


HANGUPS: list[float] = []


class Hang(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 40:
            if select.select([self.connection], [], [], 0.01)[0]:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    HANGUPS.append(time.monotonic())
                    return


def hanging_request(reps: int) -> dict[str, Any]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    sb = Sandbox(
        bindings=http.bindings(allow_hosts=[f"127.0.0.1:{port}"], timeout_s=30),
        limits=Limits(timeout_s=0.5),
    )
    after = []
    for _ in range(reps):
        HANGUPS.clear()
        sb.run(f"await tools.http_fetch({{url: 'http://127.0.0.1:{port}/'}})")
        returned = time.monotonic()
        wait_for(lambda: bool(HANGUPS), 40)
        after.append(HANGUPS[0] - returned if HANGUPS else 40.0)
    srv.shutdown()
    return {"request_went_on_s": statistics.median(after)}


def punycode(tmp: Path) -> dict[str, Any]:
    root = tmp / "files"
    root.mkdir()
    (root / "a.txt").write_text("hi")
    (root / "slow.txt").write_bytes(bytes(range(97, 123)) * 6000)  # 156 kB
    sb = Sandbox(bindings=files.bindings(root), limits=Limits(timeout_s=1))
    t0 = time.monotonic()
    res = sb.run(
        "for (let i = 0; i < 5; i++) await tools.fs_read_text({path: 'a.txt'});"
        "await tools.fs_read_text({path: 'slow.txt', encoding: 'punycode'})"
    )
    returned = time.monotonic()
    kind = res.error.kind if res.error else "ok"
    return {
        "punycode_run_s": returned - t0,
        "punycode_outcome": kind,
        "punycode_cpu_s_after_return": cpu_in_window(returned, 0.0, 4.0),
    }


MEMORY_PROBE = """
import json, resource, sys
from clambot_tools import Limits, Sandbox
from clambot_tools.stdlib import sql

sb = Sandbox(bindings=sql.bindings(sys.argv[1]), limits=Limits(timeout_s=120))
sb.run("await tools.sql_query({sql: 'SELECT 1'})")
n, query = int(sys.argv[2]), sys.argv[3]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sb.run("await Promise.allSettled(Array.from({length: %d}, () =>"
       "  tools.sql_query({sql: %s})))" % (n, json.dumps(query)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_mib": (after - before) / 1024, "base_mib": before / 1024}))
"""


def blob_memory(tmp: Path) -> dict[str, Any]:
    db = tmp / "big.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE big (data BLOB)")
    conn.execute("INSERT INTO big VALUES (randomblob(24 * 1024 * 1024))")
    conn.execute("CREATE TABLE mid (data BLOB)")
    conn.execute("INSERT INTO mid VALUES (randomblob(700 * 1024))")
    conn.commit()
    conn.close()
    out = {}
    for name, query in (
        ("24mib_blob", "SELECT data FROM big"),
        ("700kib_blob_twice", "SELECT data, data FROM mid"),
    ):
        for n in (1, 32):
            proc = subprocess.run(
                [sys.executable, "-c", MEMORY_PROBE, str(db), str(n), query],
                cwd=tmp,  # not the checkout: the venv's clambot_tools is the one measured
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(proc.stdout)
            out[f"peak_rss_growth_mib_{name}_x{n}"] = report["grew_mib"]
            out["base_rss_mib"] = report["base_mib"]
    return out


def redaction() -> dict[str, Any]:
    fetcher = http.bindings(
        allow_hosts=["api.test"],
        secrets={"api.test": {"Authorization": "Bearer sk-test-7f3a9c1e5b", "X-Key": "k/+e y&9"}},
    )[0].func.__self__  # type: ignore[attr-defined]
    typical = ("The quick brown fox, 100% & \\u0041 QUJDREVGR0g= sk-tes. " * 20_000)[: 1 << 20]
    worst = "s" * (1 << 20)
    out = {}
    for name, text in (("typical", typical), ("all_s", worst)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fetcher.redact(text)
            times.append(time.perf_counter() - t0)
        out[f"redact_1mib_{name}_ms"] = statistics.median(times) * 1000
    return out


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    commit = subprocess.run(
        ["git", "-C", str(Path(clambot_tools.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores | Python {platform.python_version()} | clambot-tools at "
        f"{commit} ({Path(clambot_tools.__file__).parent})"
    )
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results: dict[str, Any] = {}
        results.update(runaway_sql(tmp, reps))
        results.update(hanging_request(reps))
        results.update(punycode(tmp))
        results.update(blob_memory(tmp))
        results.update(redaction())
    for key, value in results.items():
        shown = f"{value:.3f}" if isinstance(value, float) else value
        print(f"{key}: {shown}")
    print(f"load average (1 min) at the start: {load:.2f}")
    print(
        f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"
    )


if __name__ == "__main__":
    main()
