"""What a script can make the host hold is bounded before it is allocated (issue 11.8,
and the red-team review): pending tool-call arguments, console entries, built-in
lookups; and a missing tool is explained with what the script may really call."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from clambot_tools import Limits, Policy, Sandbox, binding


def test_arguments_waiting_in_queued_calls_are_bounded() -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def slow(blob: str) -> int:
        seen.append(len(blob))
        await gate.wait()
        return len(blob)

    limits = Limits(timeout_s=30, max_result_bytes=64 * 1024, max_concurrent_calls=2)
    sb = Sandbox(bindings=[slow], limits=limits)
    code = """
const blob = 'x'.repeat(20000);
const calls = Array.from({length: 100}, () => tools.slow({blob}));
const settled = await Promise.allSettled(calls);
const refused = settled.filter(s => s.status === 'rejected');
[settled.length - refused.length, refused.length, refused[0] && refused[0].reason.name,
 refused[0] && refused[0].reason.message]
"""

    async def main() -> Any:
        task = asyncio.create_task(sb.arun(code))
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        gate.set()
        return await task

    res = asyncio.run(main())
    assert res.ok, res.error
    accepted, refused, name, message = res.value
    # 8 x 64 KiB of arguments may wait in calls not yet answered: 26 calls of ~20 KB
    assert accepted + refused == 100 and 0 < accepted <= 27 and refused >= 73
    assert name == "RangeError" and "await some of them" in message


def test_a_flood_of_queued_calls_keeps_host_memory_bounded() -> None:
    # the red team's reproducer: 1000 calls of ~1 MiB of arguments each, never awaited
    code = r"""
import json, resource, sys, time
from clambot_tools import Limits, Sandbox

async def echo(**args):
    return 1

sb = Sandbox(bindings=[echo], limits=Limits(timeout_s=3))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
res = sb.run("const a = Array(340000).fill([]); for (let i = 0; i < 1000; i++) "
             "tools.echo({t: a}).catch(() => {}); 1")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"kind": res.error.kind if res.error else "ok",
                  "took_s": time.monotonic() - t0, "grew_mib": (after - before) / 1024}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # stringifying 1000 x 1 MiB in the guest takes about the 3 s limit on this machine:
    # either way, the run keeps its deadline and the host its memory
    assert out["kind"] in ("ok", "timeout"), out
    assert out["took_s"] < 3 + 1.5, out  # it ran 3-5 s past a 2 s limit before
    assert out["grew_mib"] < 400, out  # it was 700-1,200 MiB before the budget


def test_empty_console_calls_count_against_the_log_cap() -> None:
    sb = Sandbox(limits=Limits(timeout_s=30, max_log_bytes=64 * 1024))
    res = sb.run("for (;;) console.log()")
    assert res.error is not None and res.error.kind == "output_limit"
    assert len(res.logs) <= 64 * 1024 // 16 + 1


def test_builtin_lookups_do_bounded_work() -> None:
    def get_order(order_id: str) -> dict[str, str]:
        """Look up an order."""
        return {"id": order_id}

    sb = Sandbox(bindings=[get_order], limits=Limits(timeout_s=10))
    assert sb.run("typeof await tools.$search('word '.repeat(200000))").value == "string"
    res = sb.run("try { await tools.$describe(Array(5000).fill('x')) } catch (e) { e.message }")
    assert "takes at most 64 names" in res.value


def test_a_missing_tool_is_explained_with_the_tools_the_script_may_call() -> None:
    def get_order(order_id: str) -> str:
        return order_id

    @binding(effects=("write",))
    def refund(order_id: str) -> str:
        return order_id

    def admin(order_id: str) -> str:
        return order_id

    sb = Sandbox(bindings=[get_order, refund, admin], policy=Policy(allow=["get_order", "refund"]))
    err = sb.run("await tools.get_ordr({order_id: 'A'})").error
    assert err is not None
    assert err.message == (
        "tools.get_ordr is not a granted tool (did you mean get_order?); "
        "granted: get_order, refund, $describe, $search"
    )  # admin is granted to the Sandbox but refused by the policy: not offered


def test_the_default_call_cap_leaves_room_for_long_tool_loops() -> None:
    def inc(n: int) -> int:
        return n + 1

    sb = Sandbox(bindings=[inc], limits=Limits(timeout_s=60))
    res = sb.run("let n = 0; for (let i = 0; i < 5000; i++) n = await tools.inc({n}); n")
    assert res.value == 5000, res.error
    assert Policy().max_calls == 10_000
