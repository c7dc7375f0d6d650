#!/usr/bin/env python3
"""`clambot report` on a large audit log: time and memory for 1 million records.

    .venv/bin/python bench/report.py [--records 1000000] [--keep PATH]

Writes a log shaped like AuditLog's (1 run record to 3 call records, sorted keys, six
bindings, a few error kinds and decisions, 30 days), then times, on the same file:
the floor (read each line and json.loads it, nothing else), `read_audit` in this
process, and the whole `clambot report --json --check` command in a new process with its
peak RSS (the file is streamed: the RSS grows with the runs kept for percentiles, 16
bytes a run, not with the file). Prints a markdown table of wall and CPU seconds (the
CPU figure is the one to trust on a machine shared with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_log(path: Path, records: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    start = 1_767_225_600.0
    span = 30 * 86_400
    bindings = ["search", "get_customer", "refund", "fs_read_text", "sql_query", "http_fetch"]
    kinds = ["timeout", "runtime", "binding_failed", "memory", "cancelled"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(records):
            t = round(start + span * i / records, 6)
            if i % 4 == 0:
                ok = rnd.random() > 0.015
                rec = {
                    "event": "run",
                    "time": t,
                    "code_sha256": f"{rnd.getrandbits(256):064x}",
                    "outcome": "ok" if ok else rnd.choice(kinds),
                    "duration_ms": round(rnd.lognormvariate(3.5, 1.0), 3),
                    "binding_calls": 3,
                    "memory_bytes": int(rnd.lognormvariate(12.5, 0.5)),
                }
            else:
                b = rnd.choice(bindings)
                decision = "allowed"
                outcome = "ok" if rnd.random() > 0.02 else "failed"
                if b == "refund":
                    decision = rnd.choice(["approved", "approval_denied", "approved_for_session"])
                    outcome = "denied" if decision == "approval_denied" else outcome
                rec = {
                    "event": "call",
                    "time": t,
                    "code_sha256": f"{rnd.getrandbits(256):064x}",
                    "binding": b,
                    "args_sha256": f"{rnd.getrandbits(256):064x}",
                    "decision": decision,
                    "outcome": outcome,
                    "duration_ms": round(rnd.lognormvariate(1.0, 1.0), 3),
                    "attempts": 1,
                }
            f.write(json.dumps(rec, sort_keys=True) + "\n")


def floor(path: Path) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    loads = json.loads
    with open(path, "rb") as f:
        for line in f:
            loads(line)
    return time.perf_counter() - t0, time.process_time() - c0


def in_process(path: Path) -> tuple[float, float, int]:
    from clambot_tools.cli._report import read_audit

    t0, c0 = time.perf_counter(), time.process_time()
    rep = read_audit(path)
    return time.perf_counter() - t0, time.process_time() - c0, rep.records


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def command(path: Path) -> tuple[float, float, float, int]:
    """Wall and CPU seconds, peak RSS (MiB) of `clambot report --json --check` in a new
    process."""
    exe = Path(sys.executable).with_name("clambot")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    c0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "report", str(path), "--json", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - t0
    cpu = _child_cpu() - c0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    runs = json.loads(proc.stdout)["runs"]
    return took, cpu, max(peak, before) / 1024, runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the log here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "audit.jsonl"
        t0 = time.perf_counter()
        write_log(path, args.records)
        size = path.stat().st_size
        print(
            f"# wrote {args.records:,} records ({size / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} | "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores | "
            f"Python {platform.python_version()}"
        )
        floors = [floor(path) for _ in range(3)]
        reads = [in_process(path) for _ in range(3)]
        records = reads[0][2]
        cmds = [command(path) for _ in range(3)]
        peak = max(c[2] for c in cmds)
        rows = [
            ("floor: read + json.loads each line, nothing else", floors),
            ("`read_audit` in process", reads),
            ("`clambot report --json --check`, new process", cmds),
        ]
        print()
        print(f"| {records:,} records, {size / 2**20:.0f} MiB | wall s | CPU s | rec/s (CPU) |")
        print("|---|---|---|---|")
        for label, runs in rows:
            wall = min(r[0] for r in runs)
            cpu = min(r[1] for r in runs)
            print(f"| {label} | {wall:.2f} | {cpu:.2f} | {records / cpu:,.0f} |")
        print()
        print(
            f"- peak RSS of the command: {peak:.0f} MiB for a {size / 2**20:.0f} MiB log "
            f"({cmds[0][3]:,} runs kept for percentiles)"
        )


if __name__ == "__main__":
    main()
