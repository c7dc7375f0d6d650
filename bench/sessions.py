#!/usr/bin/env python3
"""Sessions, snapshots and soak: the figures of the issue "Sessions, snapshots, and
speed at the limit", ClamBot beside quickjs-rs and native quickjs where they apply.

    .venv/bin/python bench/sessions.py [--quick]

Prints a markdown table and the soak/RSS lines. Memory figures are this process's RSS
(from /proc/self/status), so run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def private_mib() -> float:
    """Private (unshared) resident memory: RSS counts the start image's read-only pages
    once per sandbox that maps them, though they are one copy in the page cache."""
    total = 0
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Dirty:", "Private_Clean:")):
                total += int(line.split()[1])
    return total / 1024


def median_ms(fn: Callable[[], Any], n: int) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def session_reuse(n: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        import quickjs

        ctx = quickjs.Context()
        out["native"] = f"{median_ms(lambda: ctx.eval('1+1'), n):.4f}"
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a cell, not a crash
        out["native"] = f"error: {exc}"
    try:
        import quickjs_rs

        rt = quickjs_rs.Runtime()
        qctx = rt.new_context()
        out["quickjs-rs"] = f"{median_ms(lambda: qctx.eval('1+1'), n):.4f}"
    except Exception as exc:  # noqa: BLE001
        out["quickjs-rs"] = f"error: {exc}"
    from clambot_tools import Sandbox

    with Sandbox().session() as s:
        out["clambot"] = f"{median_ms(lambda: s.run('1+1'), n):.4f}"
    return out


def snapshot_restore(n: int) -> str:
    from clambot_tools import Sandbox

    sb = Sandbox()
    with sb.session() as s:
        s.run("globalThis.data = 'x'.repeat(1 << 20); 1")
        snap = s.snapshot()

        ts, closes = [], []
        for _ in range(n + 1):
            t = time.perf_counter()
            restored = sb.restore(s.snapshot())
            ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            restored.close()  # freeing the restored session is timed apart
            closes.append(time.perf_counter() - t)
        ms = statistics.median(ts[1:]) * 1000
        close_ms = statistics.median(closes[1:]) * 1000
    return f"{ms:.2f} (snapshot {len(snap) // 1024} KiB; closing it after: {close_ms:.2f} ms)"


def live_sessions(count: int) -> str:
    from clambot_tools import Sandbox

    sb = Sandbox()
    with sb.session() as warm:
        warm.run("1")
    gc.collect()
    before, before_private = rss_mib(), private_mib()
    sessions = []
    for i in range(count):
        s = sb.session()
        s.run(f"let state = {{id: {i}, items: [1, 2, 3]}}; state.id")
        sessions.append(s)
    after, after_private = rss_mib(), private_mib()
    for s in sessions:
        s.close()
    per = (after - before) / count
    per_private = (after_private - before_private) / count
    return (
        f"RSS {per:.3f} MiB each, private {per_private:.3f} MiB each ({count} live: "
        f"RSS +{after - before:.0f} MiB over {before:.0f} MiB)"
    )


def soak(total: int) -> str:
    from clambot_tools import Sandbox

    sb = Sandbox()
    marks = {}
    for i in range(total):
        sb.run("[1, 2, 3].map(x => x * 2).length")
        if i in (0, total // 2, total - 1):
            marks[i] = rss_mib()
    return ", ".join(f"run {k:,}: {v:.1f} MiB" for k, v in marks.items())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 200 if args.quick else 2000
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} | Python "
        f"{sys.version.split()[0]}"
    )
    print()
    print("| figure | native quickjs | quickjs-rs | clambot | target |")
    print("|---|---|---|---|---|")
    reuse = session_reuse(n)
    print(
        f"| reuse a session/context + run `1+1` (ms, median) | {reuse['native']} | "
        f"{reuse['quickjs-rs']} | {reuse['clambot']} | <= 0.05 ms |"
    )
    print(
        f"| snapshot + restore, session holding 1 MB (ms, median) | - | - | "
        f"{snapshot_restore(10 if args.quick else 30)} | <= 5 ms |"
    )
    count = 100 if args.quick else 1000
    print(f"| extra RSS per live session | - | - | {live_sessions(count)} | <= 0.5 MiB |")
    print()
    total = 10_000 if args.quick else 100_000
    print(f"- soak, {total:,} fresh runs on one Sandbox, RSS: {soak(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
