#!/usr/bin/env python3
"""ClamBot Tools side by side with its peers, in one run.

Engines:
  * native quickjs (PyPI ``quickjs``): the C extension, no sandbox at all (the floor);
  * quickjs-rs (PyPI ``quickjs-rs``): rquickjs / QuickJS-NG in wasm under wasmtime;
  * ClamBot Tools: QuickJS-NG in wasm under wasmtime.

Usage (from the repository root)::

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/run.py [--quick]

Prints a markdown table to stdout; progress goes to stderr. A peer that fails to
import or raises gets ``error: ...`` in its cells instead of stopping the script.
The memory bomb runs each engine in a child process of its own, with a hard timeout,
and reports that child's own peak RSS (see "figure 4" below). Stderr shows progress;
the last lines of the report say how busy the machine was with other processes.

Peer quirks the figures depend on (read from their installed sources):
  * quickjs-rs: ``Runtime(memory_limit=...)`` only holds settings; each
    ``rt.new_context(timeout=...)`` instantiates its own wasm instance, whose guest
    module is compiled by Cranelift once per process (no on-disk cache).
  * quickjs-rs: a host function is ``ctx.register(name, fn)`` (async if ``fn`` is a
    coroutine function; those need ``await ctx.eval_async(...)``, and a context binds
    itself to the first event loop that drives it, so all its runs share one loop).
    JS values reaching Python (host-function arguments, eval results) are walked leaf
    by leaf, several wasm calls per leaf; Python values reach JS as one JSON string.
  * native quickjs: ``set_time_limit`` counts process CPU time (``clock()``), not wall
    time; ``set_memory_limit`` is QuickJS's allocator limit. ``ctx.add_callable`` is sync
    only and refuses to run under a time limit; JS objects reach Python (as arguments or
    results) as opaque ``Object``s with only ``.json()``, and a callable cannot return a
    dict, so objects cross as JSON (``json.loads(obj.json())`` / ``ctx.parse_json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

MIB = 1 << 20
ONE_PLUS_ONE = "1+1"
CPU_LOOP = "let s=0; for (let i=0;i<5e6;i++){s+=i%7}; s"
CPU_LOOP_VALUE = 14999995
BOMB = "let a=[];while(true)a.push(new Array(1e6).fill(1))"
SPIN = "while(true){}"
#: a script calling the host function `call` n times with a small object; its value is
#: what the last call returned
ECHO_LOOP = (
    "{{ let r; for (let i = 0; i < {n}; i++) {{ r = {call}({{a: i, b: 'x'}});"
    " if (r.a !== i || r.b !== 'x') throw new Error('echo gave ' + JSON.stringify(r)); }} r }}"
)
OBJECTS = (
    "Array.from({length: 1000}, (_, i) => ({id: i, name: 'item' + i, tags: ['a', 'b'],"
    " score: i / 3}))"
)
OBJECTS_VALUE = [
    {"id": i, "name": f"item{i}", "tags": ["a", "b"], "score": i / 3} for i in range(1000)
]

#: limits of the "fresh run" figures (ClamBot's Sandbox is built with them once)
FRESH_TIMEOUT_S = 1.0
MEMORY_CAP_MB = 64
#: the engine's own time limit in the memory bomb: far beyond the hard kill, so only
#: the memory cap (or the kill) can end it
BOMB_ENGINE_TIMEOUT_S = 600.0
BOMB_HARD_TIMEOUT_S = 60.0
CPU_TIMEOUT_S = 60.0
SPIN_TIMEOUT_S = 1.0
#: time limit of the binding loops and of the 1000-object runs (peers are slow there)
LONG_TIMEOUT_S = 120.0

ENGINE_KEYS = ("native", "quickjs_rs", "clambot")


# ------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class Outcome:
    """What one evaluation gave: a value, or a short description of the error."""

    ok: bool
    value: Any = None
    error: str | None = None


Runner = Callable[[str], Outcome]
#: runs ECHO_LOOP with n calls (its argument) and returns the script's value
EchoLoop = Callable[[int], Any]


def echo_code(n: int, call: str) -> str:
    return ECHO_LOOP.format(n=n, call=call)


def echo(args: dict[str, Any]) -> dict[str, Any]:
    """The host function of the binding round trip, for the peers (one positional
    argument); ClamBot's bindings take keyword arguments instead."""
    return args


async def echo_async(args: dict[str, Any]) -> dict[str, Any]:
    return args


class Engine(Protocol):
    label: str
    #: Python source a new process runs: import, create a sandbox/context, run `1+1`
    spawn_snippet: str

    def fresh_run(self, code: str) -> Outcome:
        """Fresh sandbox/context (limits: 1 s, 64 MiB) + evaluate `code`, all included."""
        ...

    def runner(self, *, timeout_s: float, memory_mb: int) -> Runner:
        """A single-use runner whose sandbox/context is already created, so that calling
        it times only the evaluation (the engine's own clock starts there too)."""
        ...

    def echo_loop(self, *, is_async: bool) -> contextlib.AbstractContextManager[EchoLoop]:
        """A sandbox/context granting a host function that returns its (small object)
        argument, sync or async, and how to run ECHO_LOOP on it; any number of times."""
        ...


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


class NativeQuickJS:
    """`quickjs` 1.19.4: ``quickjs.Context`` with set_time_limit / set_memory_limit."""

    label = "native quickjs"
    spawn_snippet = "import quickjs; quickjs.Context().eval('1+1')"

    def __init__(self) -> None:
        import quickjs

        self._qjs = quickjs

    def _context(self, timeout_s: float, memory_mb: int) -> Any:
        ctx = self._qjs.Context()
        ctx.set_time_limit(timeout_s)
        ctx.set_memory_limit(memory_mb * MIB)
        return ctx

    def _to_python(self, value: Any) -> Any:
        """What a user does with an ``Object`` result (its only method is ``.json()``)."""
        return json.loads(value.json()) if isinstance(value, self._qjs.Object) else value

    def _eval(self, ctx: Any, code: str) -> Outcome:
        try:
            return Outcome(True, self._to_python(ctx.eval(code)))
        except self._qjs.JSException as exc:  # str() is "InternalError: ...\n    at ..."
            return Outcome(False, error=(str(exc).strip().splitlines() or ["JSException"])[0])

    def fresh_run(self, code: str) -> Outcome:
        return self._eval(self._context(FRESH_TIMEOUT_S, MEMORY_CAP_MB), code)

    def runner(self, *, timeout_s: float, memory_mb: int) -> Runner:
        ctx = self._context(timeout_s, memory_mb)
        return lambda code: self._eval(ctx, code)

    @contextlib.contextmanager
    def echo_loop(self, *, is_async: bool) -> Iterator[EchoLoop]:
        if is_async:
            raise Unsupported("no async callables")
        ctx = self._qjs.Context()  # no time limit: a callable refuses to run under one
        ctx.set_memory_limit(MEMORY_CAP_MB * MIB)
        ctx.add_callable("echo", lambda obj: ctx.parse_json(json.dumps(echo(self._to_python(obj)))))

        def run(n: int) -> Any:
            return self._to_python(ctx.eval(echo_code(n, "echo")))

        yield run


class QuickJSRs:
    """`quickjs-rs` 0.2.6: ``Runtime(memory_limit=...)`` is a config holder; every
    ``rt.new_context(timeout=...)`` is its own wasm instance; ``ctx.eval`` raises
    ``quickjs_rs.QuickJSError`` subclasses (TimeoutError, MemoryLimitError, JSError)."""

    label = "quickjs-rs"
    spawn_snippet = (
        "import quickjs_rs; rt = quickjs_rs.Runtime(); ctx = rt.new_context(); ctx.eval('1+1')"
    )

    def __init__(self) -> None:
        import quickjs_rs

        self._qrs = quickjs_rs

    def _eval_and_close(self, rt: Any, ctx: Any, code: str) -> Outcome:
        try:
            return Outcome(True, ctx.eval(code))
        except self._qrs.QuickJSError as exc:
            return Outcome(False, error=_first_line(exc))
        finally:
            ctx.close()
            rt.close()

    def _open(self, timeout_s: float, memory_mb: int) -> tuple[Any, Any]:
        rt = self._qrs.Runtime(memory_limit=memory_mb * MIB)
        return rt, rt.new_context(timeout=timeout_s)

    def fresh_run(self, code: str) -> Outcome:
        rt, ctx = self._open(FRESH_TIMEOUT_S, MEMORY_CAP_MB)
        return self._eval_and_close(rt, ctx, code)

    def runner(self, *, timeout_s: float, memory_mb: int) -> Runner:
        rt, ctx = self._open(timeout_s, memory_mb)
        return lambda code: self._eval_and_close(rt, ctx, code)

    @contextlib.contextmanager
    def echo_loop(self, *, is_async: bool) -> Iterator[EchoLoop]:
        rt, ctx = self._open(LONG_TIMEOUT_S, MEMORY_CAP_MB)
        loop = asyncio.new_event_loop() if is_async else None
        try:
            ctx.register("echo", echo_async if is_async else echo)

            def run(n: int) -> Any:
                if loop is None:
                    return ctx.eval(echo_code(n, "echo"))
                return loop.run_until_complete(ctx.eval_async(echo_code(n, "await echo")))

            yield run
        finally:
            if loop is not None:
                loop.close()
            ctx.close()
            rt.close()


class ClamBot:
    """ClamBot Tools: one Sandbox per set of limits; every ``run`` is a fresh instance."""

    label = "clambot"
    spawn_snippet = (
        "from clambot_tools import Sandbox, Limits; "
        "Sandbox(limits=Limits(timeout_s=1, memory_mb=64)).run('1+1')"
    )

    def __init__(self) -> None:
        from clambot_tools import Limits, Policy, Sandbox, binding

        self._limits_cls = Limits
        self._sandbox_cls = Sandbox
        self._policy_cls = Policy
        self._binding = binding
        self._sandboxes: dict[tuple[float, int], Any] = {}
        self.fresh_sandbox = self.sandbox(FRESH_TIMEOUT_S, MEMORY_CAP_MB)

    def sandbox(self, timeout_s: float, memory_mb: int) -> Any:
        key = (timeout_s, memory_mb)
        if key not in self._sandboxes:
            limits = self._limits_cls(timeout_s=timeout_s, memory_mb=memory_mb)
            self._sandboxes[key] = self._sandbox_cls(limits=limits)
        return self._sandboxes[key]

    @staticmethod
    def _run(sb: Any, code: str) -> Outcome:
        r = sb.run(code)
        if r.ok:
            return Outcome(True, r.value)
        return Outcome(False, error=f"{r.error.kind}: {r.error.name}")

    def fresh_run(self, code: str) -> Outcome:
        return self._run(self.fresh_sandbox, code)

    def runner(self, *, timeout_s: float, memory_mb: int) -> Runner:
        sb = self.sandbox(timeout_s, memory_mb)
        return lambda code: self._run(sb, code)

    @contextlib.contextmanager
    def echo_loop(self, *, is_async: bool) -> Iterator[EchoLoop]:
        def cb_echo(**args: Any) -> dict[str, Any]:
            return args

        async def cb_echo_async(**args: Any) -> dict[str, Any]:
            return args

        sb = self._sandbox_cls(
            bindings=[self._binding(cb_echo_async if is_async else cb_echo, name="echo")],
            limits=self._limits_cls(timeout_s=LONG_TIMEOUT_S, memory_mb=MEMORY_CAP_MB),
            policy=self._policy_cls(max_calls=None),  # the default caps a run at 1000 calls
        )

        def run(n: int) -> Any:
            r = sb.run(echo_code(n, "await tools.echo"))
            if not r.ok:
                raise BenchError(f"{r.error.kind}: {r.error.message}")
            return r.value

        yield run


ENGINE_CLASSES: dict[str, Callable[[], Engine]] = {
    "native": NativeQuickJS,
    "quickjs_rs": QuickJSRs,
    "clambot": ClamBot,
}


# ------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Reps:
    fresh: int
    spawn: int
    cpu: int
    spin: int
    throughput_s: float
    cpu_pairs: int
    echo_calls: int
    echo_loops: int
    objects: int


FULL = Reps(
    fresh=1000,
    spawn=9,
    cpu=5,
    spin=5,
    throughput_s=2.0,
    cpu_pairs=3,
    echo_calls=2000,
    echo_loops=7,
    objects=5,
)
QUICK = Reps(
    fresh=200,
    spawn=4,
    cpu=3,
    spin=3,
    throughput_s=0.5,
    cpu_pairs=2,
    echo_calls=500,
    echo_loops=3,
    objects=3,
)


class BenchError(Exception):
    """A measurement could not be made; its message goes into the cell."""


class Unsupported(BenchError):
    """The engine has no such feature; the cell says "n/a (...)"."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def expect(out: Outcome, value: Any) -> None:
    if not out.ok:
        raise BenchError(out.error or "failed")
    if out.value != value:
        raise BenchError(f"returned {out.value!r}, expected {value!r}")


def timed(fn: Runner, code: str) -> tuple[float, Outcome]:
    t0 = time.perf_counter()
    out = fn(code)
    return time.perf_counter() - t0, out


def error_cell(exc: BaseException) -> str:
    text = _first_line(exc) if not isinstance(exc, BenchError) else str(exc)
    text = text.replace("|", "/").replace("\n", " ")
    return f"error: {text[:90]}"


@dataclass
class Row:
    figure: str
    target: str
    cells: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)


def fill(row: Row, key: str, measure: Callable[[], tuple[str, float | None]]) -> None:
    """Put measure()'s text in row's cell for `key`, or the error it raised."""
    try:
        text, number = measure()
    except Unsupported as exc:
        row.cells[key] = f"n/a ({exc})"
        return
    except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
        row.cells[key] = error_cell(exc)
        return
    row.cells[key] = text
    if number is not None:
        row.numbers[key] = number


# --------------------------------------------------------------------- figures 1-5


def fig_fresh(engine: Engine, reps: int) -> tuple[str, float]:
    for _ in range(max(20, reps // 20)):  # warm up
        expect(engine.fresh_run(ONE_PLUS_ONE), 2)
    times = []
    for _ in range(reps):
        dt, out = timed(engine.fresh_run, ONE_PLUS_ONE)
        expect(out, 2)
        times.append(dt)
    ms = statistics.median(times) * 1000
    return f"{ms:.3f}", ms


def spawn_ms(snippet: str, reps: int, env: dict[str, str]) -> float:
    """Median wall time of `python -c snippet` in new processes; the first run (not
    counted) warms the OS page cache, the bytecode cache and any on-disk caches."""
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", snippet],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            raise BenchError(last)
        if i:
            times.append(dt)
    return statistics.median(times) * 1000


def spawn_env(pycache: str) -> dict[str, str]:
    """The environment of the spawned processes: bytecode is written to (and read from)
    a private cache, so every module, ClamBot's editable sources included, starts from
    warm .pyc files even where PYTHONDONTWRITEBYTECODE is set, and no .pyc lands in
    the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def fig_spawn(engine: Engine, reps: int, env: dict[str, str]) -> tuple[str, float]:
    ms = spawn_ms(engine.spawn_snippet, reps, env)
    return f"{ms:.0f}", ms


def cpu_ms(engine: Engine, reps: int) -> float:
    times = []
    for _ in range(reps):
        run = engine.runner(timeout_s=CPU_TIMEOUT_S, memory_mb=MEMORY_CAP_MB)
        dt, out = timed(run, CPU_LOOP)
        expect(out, CPU_LOOP_VALUE)
        times.append(dt)
    return statistics.median(times) * 1000


def fig_cpu(engine: Engine, reps: int) -> tuple[str, float]:
    ms = cpu_ms(engine, reps)
    return f"{ms:.0f}", ms


def fig_spin(engine: Engine, reps: int) -> tuple[str, float]:
    overs = []
    outcome = ""
    for _ in range(reps):
        run = engine.runner(timeout_s=SPIN_TIMEOUT_S, memory_mb=MEMORY_CAP_MB)
        dt, out = timed(run, SPIN)
        if out.ok:
            raise BenchError("`while(true){}` returned a value")
        outcome = out.error or ""
        overs.append((dt - SPIN_TIMEOUT_S) * 1000)
    ms = statistics.median(overs)
    return f"{ms:.1f} ({outcome[:40]})", ms


# ------------------------------------------------------------------- figures 7-8


def fig_echo(engine: Engine, reps: Reps, *, is_async: bool) -> tuple[str, float]:
    """Microseconds per call: a loop of `reps.echo_calls` calls, total / calls, median
    over `reps.echo_loops` loops (sandbox/context creation not counted where it can be
    kept out; ClamBot's fresh instance per run is counted)."""
    n = reps.echo_calls
    with engine.echo_loop(is_async=is_async) as run:
        for warm in (10, 100):
            if (got := run(warm)) != {"a": warm - 1, "b": "x"}:
                raise BenchError(f"returned {got!r}")
        times = []
        for _ in range(reps.echo_loops):
            t0 = time.perf_counter()
            got = run(n)
            times.append(time.perf_counter() - t0)
            if got != {"a": n - 1, "b": "x"}:
                raise BenchError(f"returned {got!r}")
    us = statistics.median(times) / n * 1e6
    return f"{us:.1f}", us


def fig_objects(engine: Engine, reps: int) -> tuple[str, float]:
    """Milliseconds: median run returning 1000 objects to Python minus median `1+1` run,
    each on a new runner (same engine, same limits)."""

    def one(code: str, value: Any) -> float:
        dt, out = timed(engine.runner(timeout_s=LONG_TIMEOUT_S, memory_mb=MEMORY_CAP_MB), code)
        expect(out, value)
        return dt

    for _ in range(3):
        one(ONE_PLUS_ONE, 2)
    objects, base = [], []
    for _ in range(reps):
        objects.append(one(OBJECTS, OBJECTS_VALUE))
        base.append(one(ONE_PLUS_ONE, 2))
    ms = (statistics.median(objects) - statistics.median(base)) * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}", ms


# ------------------------------------------------------------------ figure 4 (bomb)
#
# Three processes: this one starts a small *wrapper* (`--child bomb-wrap KEY`), which
# starts the *bomb* (`--child bomb KEY`), kills it after BOMB_HARD_TIMEOUT_S and reads
# its peak RSS from os.wait4. The wrapper is there because Linux carries the peak RSS
# of the parent's address space over fork+exec: spawned straight from this (large)
# process, even an idle child would report this process's peak.


def bomb_child(key: str) -> None:
    """The bomb: run BOMB under the memory cap; print JSON lines (the last one counts)."""
    import resource

    report: dict[str, Any] = {}
    try:
        engine = ENGINE_CLASSES[key]()
        run = engine.runner(timeout_s=BOMB_ENGINE_TIMEOUT_S, memory_mb=MEMORY_CAP_MB)
        report["base_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(report), flush=True)  # what the wrapper knows if it has to kill us
        dt, out = timed(run, BOMB)
        report.update(elapsed_s=dt, ok=out.ok, error=out.error)
    except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
        report["exception"] = _first_line(exc)
    print(json.dumps(report), flush=True)


def bomb_wrapper(key: str) -> None:
    """The wrapper: run the bomb child, kill it at the hard timeout, print one JSON line:
    the child's last report plus its peak RSS and whether it was killed."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", "bomb", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out_lines: list[str] = []
    err_lines: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_lines.extend(proc.stdout or ()), daemon=True),
        threading.Thread(target=lambda: err_lines.extend(proc.stderr or ()), daemon=True),
    ]
    for t in readers:
        t.start()
    waited: list[tuple[int, int, Any]] = []
    waiter = threading.Thread(target=lambda: waited.append(os.wait4(proc.pid, 0)), daemon=True)
    waiter.start()
    waiter.join(BOMB_HARD_TIMEOUT_S)
    killed = waiter.is_alive()
    if killed:
        proc.send_signal(signal.SIGKILL)
        waiter.join()
    proc.returncode = -1  # reaped by wait4: keep Popen from waiting for it again
    for t in readers:
        t.join(5)
    _, status, usage = waited[0]
    reports = [json.loads(x) for x in out_lines if x.startswith("{")]
    result = reports[-1] if reports else {}
    result.update(
        killed=killed,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        status=status,
        stderr_tail=err_lines[-1].strip() if err_lines else "",
    )
    print(json.dumps(result), flush=True)


@dataclass
class BombResult:
    elapsed_s: float | None  # None: killed at the hard timeout
    peak_rss_mib: float
    base_rss_mib: float | None
    outcome: str


def run_bomb(key: str) -> BombResult:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", "bomb-wrap", key],
        capture_output=True,
        text=True,
        timeout=BOMB_HARD_TIMEOUT_S + 60,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BenchError(f"wrapper failed: {tail}")
    rep = json.loads(lines[-1])
    peak, base = float(rep["peak_rss_mib"]), rep.get("base_rss_mib")
    if rep["killed"]:
        return BombResult(None, peak, base, f"killed at {BOMB_HARD_TIMEOUT_S:.0f} s")
    if "exception" in rep:
        raise BenchError(rep["exception"])
    if "elapsed_s" not in rep:
        raise BenchError(f"child died: {rep['stderr_tail'] or 'wait status ' + str(rep['status'])}")
    outcome = "no error?!" if rep["ok"] else str(rep["error"])
    return BombResult(float(rep["elapsed_s"]), peak, base, outcome)


def fmt_mib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


# ---------------------------------------------------------------- figure 6 (threads)


def throughput(run: Callable[[], None], n_threads: int, duration_s: float) -> float:
    """Runs per second of `run` called in a loop by n_threads threads for duration_s."""
    counts = [0] * n_threads
    start = threading.Barrier(n_threads + 1)
    deadline = [0.0]
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        start.wait()
        n = 0
        try:
            while time.perf_counter() < deadline[0]:
                run()
                n += 1
        except BaseException as exc:  # noqa: BLE001 - any failure becomes a cell
            failures.append(exc)
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + duration_s
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return sum(counts) / elapsed


def cpu_pair_speedup(run: Callable[[], None], pairs: int) -> tuple[float, float, float]:
    """(sequential s, parallel s, speedup): one thread running `run` twice vs two threads
    running it once each; medians over `pairs` tries."""
    seqs, pars = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        run()
        run()
        seqs.append(time.perf_counter() - t0)
        threads = [threading.Thread(target=run) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pars.append(time.perf_counter() - t0)
    seq, par = statistics.median(seqs), statistics.median(pars)
    return seq, par, seq / par


def throughput_lines(engine: Engine | None, reps: Reps) -> list[str]:
    if not isinstance(engine, ClamBot):
        return ["- throughput: error: ClamBot did not load"]
    sb = engine.fresh_sandbox
    cpu_sb = engine.sandbox(CPU_TIMEOUT_S, MEMORY_CAP_MB)

    def one() -> None:
        expect(ClamBot._run(sb, ONE_PLUS_ONE), 2)

    def cpu() -> None:
        expect(ClamBot._run(cpu_sb, CPU_LOOP), CPU_LOOP_VALUE)

    lines = []
    try:
        throughput(one, 1, min(0.3, reps.throughput_s))  # warm up
        rates = {n: throughput(one, n, reps.throughput_s) for n in (1, 2, 8)}
        lines.append(
            "- ClamBot throughput, fresh `1+1` runs, threads sharing one Sandbox: "
            + ", ".join(f"{n} thread{'s' * (n > 1)}: {r:,.0f} runs/s" for n, r in rates.items())
            + f"; 2-thread/1-thread = {rates[2] / rates[1]:.2f}x"
            + f", 8-thread/1-thread = {rates[8] / rates[1]:.2f}x"
        )
    except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
        lines.append(f"- ClamBot throughput: {error_cell(exc)}")
    try:
        seq, par, speedup = cpu_pair_speedup(cpu, reps.cpu_pairs)
        lines.append(
            f"- ClamBot CPU-bound on one Sandbox: 2 threads x 1 CPU loop = {par * 1000:.0f} ms"
            f" vs 1 thread x 2 = {seq * 1000:.0f} ms: speedup {speedup:.2f}x"
            f" (ideal {min(2, os.cpu_count() or 1)}.00x on {os.cpu_count()} cores)"
        )
    except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
        lines.append(f"- ClamBot CPU-bound check: {error_cell(exc)}")
    return lines


# ---------------------------------------------------------------------- the report


def header() -> str:
    try:
        date = subprocess.run(
            ["date", "-u"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if models:
            cpu = models[0]
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    versions = ", ".join(
        f"{d} {version(d)}" for d in ("clambot-tools", "quickjs-rs", "quickjs", "wasmtime")
    )
    return (
        f"# {date} | {cpu}, {os.cpu_count()} cores | Python {platform.python_version()}"
        f" | {versions}"
    )


def judge(row: Row, ok: Callable[[float], bool]) -> None:
    """Mark ClamBot's cell against the target."""
    if "clambot" in row.numbers:
        row.cells["clambot"] += " (met)" if ok(row.numbers["clambot"]) else " (MISSED)"


def render(rows: list[Row]) -> str:
    cols = ["figure", "native quickjs", "quickjs-rs", "clambot", "target"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.cells.get(k, "n/a") for k in ENGINE_KEYS]
        out.append("| " + " | ".join([r.figure, *cells, r.target]) + " |")
    return "\n".join(out)


class CpuWatch:
    """How busy the machine was with *other* processes: all CPU time from /proc/stat
    minus this process's and its children's, in cores on average over the watch."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.ours0 = self._ours()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def other_cores(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.monotonic() - self.t0
        return max(0.0, (busy - self.busy0) - (self._ours() - self.ours0)) / max(wall, 1e-9)


def measure(
    engines: dict[str, Engine | None], load_errors: dict[str, str], reps: Reps
) -> tuple[list[Row], list[str]]:
    def each(row: Row, how: Callable[[Engine], tuple[str, float | None]]) -> Row:
        for key in ENGINE_KEYS:
            engine = engines[key]
            if engine is None:
                row.cells[key] = load_errors[key]
                continue
            log(f"  {engine.label}")
            gc.collect()
            fill(row, key, functools.partial(how, engine))
        return row

    log("1/8 fresh sandbox/context + run 1+1")
    fresh = each(
        Row("fresh sandbox/context + run `1+1` (ms, median)", "<= 0.25 ms"),
        lambda e: fig_fresh(e, reps.fresh),
    )
    judge(fresh, lambda v: v <= 0.25)

    log("2/8 new process: import + first run")
    with tempfile.TemporaryDirectory(prefix="clambot-bench-pyc-") as pycache:
        env = spawn_env(pycache)
        spawn = each(
            Row("new process: import + first run, warm cache (ms, median)", "<= 120 ms"),
            lambda e: fig_spawn(e, reps.spawn, env),
        )
        try:
            bare = f"{spawn_ms('pass', reps.spawn, env):.0f} ms"
        except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
            bare = error_cell(exc)
    judge(spawn, lambda v: v <= 120)

    log("3/8 CPU loop")
    cpu = each(
        Row("CPU loop 5e6 (ms, median; x native)", "<= 1.4x native"), lambda e: fig_cpu(e, reps.cpu)
    )
    native_ms = cpu.numbers.get("native")
    if native_ms:
        for key, ms in cpu.numbers.items():
            cpu.cells[key] += f" ({ms / native_ms:.2f}x)"
            cpu.numbers[key] = ms / native_ms
        judge(cpu, lambda ratio: ratio <= 1.4)

    log("4/8 memory bomb (a child process per engine)")
    bomb_t = Row(f"memory bomb, {MEMORY_CAP_MB} MiB cap: time until it stops (s)", "<= 0.5 s")
    bomb_m = Row("memory bomb: peak RSS of the process (base: before the bomb)", "<= 200 MiB")
    for key in ENGINE_KEYS:
        if engines[key] is None:  # the child would fail the same way
            bomb_t.cells[key] = bomb_m.cells[key] = load_errors[key]
            continue
        log(f"  {key}")
        try:
            res = run_bomb(key)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
            bomb_t.cells[key] = bomb_m.cells[key] = error_cell(exc)
            continue
        if res.elapsed_s is None:
            bomb_t.cells[key] = f">{BOMB_HARD_TIMEOUT_S:.0f} s, killed"
        else:
            bomb_t.cells[key] = f"{res.elapsed_s:.2f} ({res.outcome[:50]})"
            bomb_t.numbers[key] = res.elapsed_s
        base = f" (base {res.base_rss_mib:.0f} MiB)" if res.base_rss_mib is not None else ""
        bomb_m.cells[key] = fmt_mib(res.peak_rss_mib) + base
        bomb_m.numbers[key] = res.peak_rss_mib
    judge(bomb_t, lambda v: v <= 0.5)
    judge(bomb_m, lambda v: v <= 200)

    log("5/8 while(true){} under a 1 s timeout")
    spin = each(
        Row("`while(true){}`, 1 s timeout: overshoot (ms, median)", "<= 10 ms"),
        lambda e: fig_spin(e, reps.spin),
    )
    judge(spin, lambda v: v <= 10)

    log("6/8 binding round trip")
    loops = f"{reps.echo_calls}-call loop"
    echo_rows = []
    for is_async in (False, True):
        kind = "async" if is_async else "sync"
        row = each(
            Row(
                f"binding round trip, small object, {kind} host function (us/call, median {loops})",
                "<= 10 us",
            ),
            lambda e, a=is_async: fig_echo(e, reps, is_async=a),
        )
        judge(row, lambda v: v <= 10)
        echo_rows.append(row)

    log("7/8 1000 objects returned to Python")
    objects = each(
        Row("1000 objects returned to Python, minus a `1+1` run (ms, median)", "<= 5 ms"),
        lambda e: fig_objects(e, reps.objects),
    )
    judge(objects, lambda v: v <= 5)

    log("8/8 threads sharing one ClamBot Sandbox")
    lines = throughput_lines(engines["clambot"], reps)
    lines.append(f"- baseline: `python -c pass` = {bare} (median, same settings as row 2)")
    return [fresh, spawn, cpu, bomb_t, bomb_m, spin, *echo_rows, objects], lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    ap.add_argument("--child", nargs=2, metavar=("JOB", "ENGINE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job, key = args.child
        jobs = {"bomb": bomb_child, "bomb-wrap": bomb_wrapper}
        if job not in jobs or key not in ENGINE_CLASSES:
            ap.error(f"unknown child job {args.child}")
        jobs[job](key)
        return 0

    reps = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    watch = CpuWatch()
    head = header()
    engines: dict[str, Engine | None] = {}
    load_errors: dict[str, str] = {}
    for key, cls in ENGINE_CLASSES.items():
        try:
            engines[key] = cls()
        except Exception as exc:  # noqa: BLE001 - any failure becomes a cell
            engines[key] = None
            load_errors[key] = error_cell(exc)

    rows, lines = measure(engines, load_errors, reps)

    print(head)
    print()
    print(render(rows))
    print()
    print("\n".join(lines))
    other = watch.other_cores()
    if other is not None:
        warn = " - WARNING: the machine was not idle, figures are noisy" if other > 0.2 else ""
        print(
            f"- other processes used {other:.2f} of {os.cpu_count()} cores on average"
            f" during the run{warn}"
        )
    print(
        f"- mode: {'--quick' if args.quick else 'full'};"
        f" total bench time {time.perf_counter() - t_start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
