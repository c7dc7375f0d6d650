#!/usr/bin/env python3
"""What the module cache's integrity costs: loading a cached compiled module the way
ClamBot does now (read the file into memory, check its HMAC-SHA256, deserialize from
memory) beside the way it did before (sha256 of the file, then Wasmtime's
``deserialize_file``, which mmaps it: a file truncated under the mapping kills the
process with SIGBUS, and a same-user script could rewrite file and checksum).

    .venv/bin/python bench/cache_load.py [--reps N]

Figures, all medians on a warm OS page cache:

1. one load of each cached module (the start image and the plain guest), both ways,
   alternating in one process;
2. the first fresh run after the load in a new process, both ways (an in-memory module
   builds its copy-on-write memory image in an anonymous file instead of mapping the
   cache file);
3. a new process: import + ``Sandbox().run('1+1')``, warm cache (as bench/run.py row 2).

The "before" path is reproduced here with public wasmtime calls on the same payload
(written to a private temporary file), so both are measured on the same machine, in
the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

#: fresh runs timed in each new process, after its first (steady state)
N_RUNS = 300

SNIPPET_NOW = """
import sys, time
t0 = time.perf_counter()
from clambot_tools import Sandbox, Limits
sb = Sandbox(limits=Limits(timeout_s=1, memory_mb=64))
t1 = time.perf_counter()
assert sb.run('1+1').value == 2
t2 = time.perf_counter()
runs = []
for _ in range(N_RUNS):
    t = time.perf_counter()
    sb.run('1+1')
    runs.append(time.perf_counter() - t)
runs.sort()
print(t1 - t0, t2 - t1, runs[len(runs) // 2] if runs else 0)
"""

#: the same, with the cache's load replaced by the mmapped one of the version before
SNIPPET_BEFORE = """
import hashlib, os, sys, time
t0 = time.perf_counter()
import wasmtime
from clambot_tools import _engine
from pathlib import Path
PLAIN = Path(sys.argv[1])

def load_mmapped(engine, path, key):
    payload = PLAIN / path.name
    hashlib.sha256(payload.read_bytes()).hexdigest()
    return wasmtime.Module.deserialize_file(engine, str(payload))

_engine._load_cached = load_mmapped
from clambot_tools import Sandbox, Limits
sb = Sandbox(limits=Limits(timeout_s=1, memory_mb=64))
t1 = time.perf_counter()
assert sb.run('1+1').value == 2
t2 = time.perf_counter()
runs = []
for _ in range(N_RUNS):
    t = time.perf_counter()
    sb.run('1+1')
    runs.append(time.perf_counter() - t)
runs.sort()
print(t1 - t0, t2 - t1, runs[len(runs) // 2] if runs else 0)
"""


def spawn(
    snippet: str, reps: int, env: dict[str, str], *args: str, runs: int = 0
) -> dict[str, float]:
    """Medians (ms) over `reps` new processes of: the whole process (wall, and CPU from
    its rusage), import + Sandbox(), the first run, and (with `runs`) the median of
    that many runs after it. One more process first, not counted, warms every cache."""
    snippet = snippet.replace("N_RUNS", str(runs))
    rows: dict[str, list[float]] = {"wall": [], "cpu": [], "start": [], "first": [], "later": []}
    for i in range(reps + 1):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", snippet, *args], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"the snippet failed: exit {proc.returncode}")
        if i:
            a, b, c = (float(x) for x in out.split())
            rows["wall"].append(dt * 1000)
            rows["cpu"].append((usage.ru_utime + usage.ru_stime) * 1000)
            rows["start"].append(a * 1000)
            rows["first"].append(b * 1000)
            rows["later"].append(c * 1000)
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()

    import wasmtime

    from clambot_tools import _engine

    with tempfile.TemporaryDirectory(prefix="clambot-bench-cache-") as tmp:
        root = Path(tmp)
        cache = root / "cache"
        plain = root / "plain"
        pyc = root / "pyc"
        for d in (cache, plain, pyc):
            d.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["CLAMBOT_CACHE_DIR"] = str(cache)
        env["PYTHONPYCACHEPREFIX"] = str(pyc)
        # fill the cache in a child (this process keeps its own engines)
        subprocess.run(
            [sys.executable, "-c", "from clambot_tools import Sandbox; Sandbox().run('1')"],
            env=env,
            check=True,
            timeout=600,
        )
        os.environ["CLAMBOT_CACHE_DIR"] = str(cache)
        key = _engine.local_secret(cache, b"module-cache")
        assert key is not None
        head = len(_engine._CACHE_MAGIC) + _engine._MAC_BYTES
        files = sorted(cache.glob("guest-*.cwasm"), key=lambda p: p.stat().st_size)
        for f in files:  # the payloads alone, as the version before stored them
            (plain / f.name).write_bytes(f.read_bytes()[head:])
            os.chmod(plain / f.name, 0o600)

        engine = _engine.get_runtime().engine
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M')} | {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores | Python {platform.python_version()} | wasmtime "
            f"{version('wasmtime')} | clambot-tools {version('clambot-tools')} | load "
            f"{os.getloadavg()[0]:.2f}"
        )
        print()
        print("| step (median) | mmapped + sha256 (before) | in memory + HMAC (now) |")
        print("|---|---|---|")
        for f in files:
            before, now, before_cpu, now_cpu = [], [], [], []
            for _ in range(args.reps * 3):
                t0, c0 = time.perf_counter(), time.thread_time()
                data = (plain / f.name).read_bytes()
                hashlib.sha256(data).hexdigest()
                m1 = wasmtime.Module.deserialize_file(engine, str(plain / f.name))
                t1, c1 = time.perf_counter(), time.thread_time()
                m2 = _engine._load_cached(engine, f, key)
                t2, c2 = time.perf_counter(), time.thread_time()
                assert m1 is not None and m2 is not None
                before.append((t1 - t0) * 1000)
                now.append((t2 - t1) * 1000)
                before_cpu.append((c1 - c0) * 1000)
                now_cpu.append((c2 - c1) * 1000)
            size = f.stat().st_size / 2**20
            print(
                f"| load one cached module ({size:.1f} MiB): wall / CPU | "
                f"{statistics.median(before):.2f} / {statistics.median(before_cpu):.2f} ms | "
                f"{statistics.median(now):.2f} / {statistics.median(now_cpu):.2f} ms |"
            )

        b = spawn(SNIPPET_BEFORE, args.reps, env, str(plain))
        n = spawn(SNIPPET_NOW, args.reps, env)
        b_runs = spawn(SNIPPET_BEFORE, max(3, args.reps // 3), env, str(plain), runs=N_RUNS)
        n_runs = spawn(SNIPPET_NOW, max(3, args.reps // 3), env, runs=N_RUNS)
        print(f"| new process: import + `Sandbox()` | {b['start']:.1f} ms | {n['start']:.1f} ms |")
        print(f"| new process: its first `1+1` | {b['first']:.2f} ms | {n['first']:.2f} ms |")
        print(
            f"| new process: fresh `1+1` after that (median of {N_RUNS}) | "
            f"{b_runs['later']:.3f} ms | {n_runs['later']:.3f} ms |"
        )
        print(
            "| new process: import + first run, warm cache (bench/run.py row 2): wall / CPU | "
            f"{b['wall']:.0f} / {b['cpu']:.0f} ms | {n['wall']:.0f} / {n['cpu']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
