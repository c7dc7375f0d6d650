#!/usr/bin/env python3
"""Saved scripts and the bytecode cache: a 200-line saved script's run beside running
its source each time (the target: at least 2x faster), and what a cold compile costs.

    .venv/bin/python bench/scripts.py [--quick]

Two 200-line scripts, both realistic and both reported (the speed-up depends on how
much of a run is parsing): `report` computes a month's figures from 40 generated orders
(most of its run is JavaScript work), `triage` sorts 12 orders fetched with two tool
calls through a page of rules (most of its run is defining them). Prints a markdown
table; wall time and this process's CPU time per run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from clambot_tools import BytecodeCache, Policy, Sandbox, ScriptLibrary, binding  # noqa: E402

REPORT = (HERE / "scripts_report.js").read_text()
TRIAGE = (HERE / "scripts_triage.js").read_text()
MONTH = {
    "type": "object",
    "properties": {"month": {"type": "string"}},
    "required": ["month"],
}


@binding(description="Orders of one month")
def orders(month: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"O-{i:03d}",
            "customer": f"C-{i % 5}",
            "eur": 15.5 * (i % 7) + 3,
            "country": ["FR", "DE", "US", "BR", "JP"][i % 5],
            "status": ["open", "paid", "shipped", "returned"][i % 4],
            "items": 1 + i % 3,
        }
        for i in range(12)
    ]


@binding(description="A customer's record")
def customers(ids: list[str]) -> list[dict[str, Any]]:
    return [{"id": c, "vip": c.endswith(("1", "3")), "disputes": int(c[-1]) % 3} for c in ids]


def timed(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(median wall ms, mean CPU ms of this process) over `n` calls after one warm-up."""
    fn()
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / n
    return statistics.median(walls) * 1000, cpu * 1000


def timed_pair(
    a: Callable[[], Any], b: Callable[[], Any], n: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """`timed` of `a` and of `b`, their calls interleaved (a, b, a, b...) so that a busy
    spell of the machine weighs on both alike."""
    a()
    b()
    walls: tuple[list[float], list[float]] = ([], [])
    cpus = [0.0, 0.0]
    for _ in range(n):
        for i, fn in enumerate((a, b)):
            c = time.process_time()
            t = time.perf_counter()
            fn()
            walls[i].append(time.perf_counter() - t)
            cpus[i] += time.process_time() - c
    return (
        (statistics.median(walls[0]) * 1000, cpus[0] / n * 1000),
        (statistics.median(walls[1]) * 1000, cpus[1] / n * 1000),
    )


def compile_ms(sb: Sandbox, code: str, n: int) -> tuple[float, float, float, int]:
    """(ms to compile in a fresh instance, ms more to write the bytecode out, ms to
    read it back instead, bytecode bytes); each less a fresh instance alone."""
    from clambot_tools._guest import Guest

    caps = (64 << 20, 1 << 20, 512 * 1024, 1)
    src = code.encode()
    with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
        bytecode = g.compile(sb._names_block, src, *caps).payload

    def step(what: str) -> Callable[[], None]:
        def run() -> None:
            with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
                if what == "compile":
                    g.compile(sb._names_block, src, *caps, keep=False)
                elif what == "write":
                    g.compile(sb._names_block, src, *caps, keep=True)
                elif what == "load":
                    g.load(sb._names_block, bytecode, *caps)

        return run

    empty = timed(step("none"), n)[0]
    parse = timed(step("compile"), n)[0]
    write = timed(step("write"), n)[0]
    load = timed(step("load"), n)[0]
    return parse - empty, write - parse, load - empty, len(bytecode)


def image_alternative(sb: Sandbox, code: str, n: int) -> tuple[float, float, int, int]:
    """The other design: keep the compiled function in a per-script memory image and
    patch it into each fresh instance. (ms to restore it, ms to read bytecode back,
    each less a fresh instance alone; bytes kept per script that way; bytecode bytes)."""
    from clambot_tools._guest import Guest
    from clambot_tools._session import STACK_BYTES

    caps = (64 << 20, 1 << 20, 512 * 1024, 1)
    base = sb._base_memory()
    with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
        bytecode = g.compile(sb._names_block, code.encode(), *caps).payload
        size, mem = g.memory_image(STACK_BYTES)
    page = 4096
    regions = [
        (off, mem[off : off + page])
        for off in range(0, len(mem), page)
        if off >= len(base) or base[off : off + page] != mem[off : off + page]
    ]

    def patch() -> None:
        with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
            g.load_memory_image(size, STACK_BYTES, b"")
            for off, chunk in regions:
                g.write(STACK_BYTES + off, chunk)

    def load() -> None:
        with Guest(sb._image, memory_limit_bytes=sb._store_limit) as g:
            g.load(sb._names_block, bytecode, *caps)

    def empty() -> None:
        with Guest(sb._image, memory_limit_bytes=sb._store_limit):
            pass

    kept = sum(len(c) for _, c in regions)
    base_ms = timed(empty, n)[0]
    return timed(patch, n)[0] - base_ms, timed(load, n)[0] - base_ms, kept, len(bytecode)


CASES = (
    # (label, saved script, its arguments)
    ("report, 40 orders", "report", {"month": "2024-03", "orders": 40}),
    ("report, 5 orders", "report", {"month": "2024-03", "orders": 5}),
    ("triage (2 tool calls)", "triage", {"month": "2024-03"}),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    n = 60 if ap.parse_args().quick else 400
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} | {platform.machine()}, {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | load {os.getloadavg()[0]:.2f}"
    )
    grants = [orders, customers]
    rows, design = [], []
    with tempfile.TemporaryDirectory() as tmp:
        library = ScriptLibrary(Path(tmp) / "scripts")
        saver = Sandbox(bindings=grants, scripts=library, policy=Policy(auto_approve=("write",)))
        schema = {
            "type": "object",
            "properties": {"month": {"type": "string"}, "orders": {"type": "integer"}},
            "required": ["month"],
        }
        saver.save_script("report", REPORT, description="Figures of a month", args_schema=schema)
        saver.save_script(
            "triage",
            TRIAGE,
            description="Orders needing a human",
            args_schema=MONTH,
            bindings=["orders", "customers"],
        )
        sources = {"report": REPORT, "triage": TRIAGE}
        for label, name, args in CASES:
            code = sources[name]
            # the source each time: the same script run as a plain script, its input in
            # a first line (one line longer; parsing that line is part of the figure)
            each_time = f"const args = {json.dumps(args)};{code}"
            plain = Sandbox(bindings=grants, bytecode_cache=False)
            assert plain.run(each_time).ok
            sb = Sandbox(bindings=grants, scripts=library, bytecode_cache=BytecodeCache())
            assert sb.run_saved(name, args).ok
            gc.collect()
            src, saved = timed_pair(
                lambda p=plain, c=each_time: p.run(c),  # type: ignore[misc]
                lambda b=sb, s=name, a=args: b.run_saved(s, a),  # type: ignore[misc]
                n,
            )

            def cold(s: str = name, a: dict[str, Any] = args) -> None:
                # a Sandbox with an empty cache of its own: compile, keep, run
                Sandbox(bindings=grants, scripts=library, bytecode_cache=BytecodeCache()).run_saved(
                    s, a
                )

            def construct() -> None:
                Sandbox(bindings=grants, scripts=library, bytecode_cache=BytecodeCache())

            cold_ms = timed(cold, max(20, n // 4))[0] - timed(construct, max(20, n // 4))[0]
            parse, write, load, size = compile_ms(sb, code, n)
            rows.append((label, code, size, src, saved, cold_ms, parse, write, load))
            if label.startswith(("report, 40", "triage")):
                design.append((name, image_alternative(sb, code, max(50, n // 4))))
    print()
    print(
        "| 200-line saved script | source each time: wall / CPU (ms) | saved, cache warm: "
        "wall / CPU (ms) | speed-up | parsing, share of a run (most a cache can give) "
        "| first run, cache cold (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for label, _code, _size, src, saved, cold_ms, parse, _write, _load in rows:
        speedup = src[0] / saved[0]
        ceiling = src[0] / max(1e-9, src[0] - parse)
        verdict = "met" if speedup >= 2 else "MISSED"
        print(
            f"| {label} | {src[0]:.3f} / {src[1]:.3f} | {saved[0]:.3f} / {saved[1]:.3f} "
            f"| {speedup:.2f}x ({verdict}, target >= 2x) | {parse:.3f} ms, "
            f"{100 * parse / src[0]:.0f}% ({ceiling:.2f}x) | {cold_ms:.3f} |"
        )
    print()
    print(
        "| script | lines / source / bytecode (bytes) | cold compile (ms) | + writing the "
        "bytecode out (ms) | reading it back instead (ms) |"
    )
    print("|---|---|---|---|---|")
    seen = set()
    for label, code, size, _, _, _, parse, write, load in rows:
        name = label.split(",")[0].split(" ")[0]
        if name in seen:
            continue
        seen.add(name)
        print(
            f"| {name} | {code.count(chr(10)) + 1} / {len(code.encode()):,} / {size:,} "
            f"| {parse:.3f} | {write:.3f} | {load:.3f} |"
        )
    print()
    print(
        "| script | restore a per-script memory image (ms) | read bytecode back (ms) "
        "| kept per script: image / bytecode (bytes) |"
    )
    print("|---|---|---|---|")
    for name, (patch, readback, kept, size) in design:
        print(f"| {name} | {patch:.3f} | {readback:.3f} | {kept:,} / {size:,} |")


if __name__ == "__main__":
    main()
