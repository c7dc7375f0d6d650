"""Sessions keep globals between runs; limits roll a run back; snapshots move them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from clambot_tools import Limits, Sandbox, SnapshotError, binding


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    def double(n: int) -> int:
        return n * 2

    return Sandbox(bindings=[double], limits=Limits(timeout_s=0.5, memory_mb=32))


def test_globals_persist_between_runs(sb: Sandbox) -> None:
    with sb.session() as s:
        assert s.run("let x = 1; const f = (a) => a * 10; var v = 'v'; x").value == 1
        assert s.run("x += 1; [f(x), v]").value == [20, "v"]
        assert s.run("await tools.double({n: x})").value == 4
    # a plain run still starts clean
    assert sb.run("typeof x").value == "undefined"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("x = 100; while (true) {}", "timeout"),
        ("x = 100; const keep = []; while (true) keep.push(new Array(1e5).fill(1))", "memory"),
        ("x = 100; console.log('z'.repeat(2 << 20))", "output_limit"),
        ("x = 100; function r() { r() } r()", "stack"),
    ],
)
def test_a_run_that_hits_a_limit_is_rolled_back(sb: Sandbox, code: str, kind: str) -> None:
    with sb.session() as s:
        s.run("let x = 1")
        res = s.run(code)
        assert res.error is not None and res.error.kind == kind
        assert "restored to its state before this run" in res.error.message
        assert s.run("x").value == 1
        assert s.run("x + 1").value == 2  # and it is fully usable


def test_a_throw_keeps_what_ran_before_it(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run("let x = 1")
        res = s.run("x = 7; throw new Error('boom')")
        assert res.error is not None and res.error.kind == "runtime"
        assert s.run("x").value == 7


def test_timers_do_not_leak_into_the_next_run(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run("setTimeout(() => { globalThis.late = 1 }, 5); 'scheduled'")
        assert s.run("await new Promise(r => setTimeout(r, 30)); typeof late").value == "undefined"


def test_session_runs_from_many_threads_are_serialised(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run("let n = 0")
        threads = [
            threading.Thread(target=lambda: [s.run("n++") for _ in range(50)]) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.run("n").value == 200


def test_closed_session_refuses_runs(sb: Sandbox) -> None:
    s = sb.session()
    s.close()
    from clambot_tools import ConfigError

    with pytest.raises(ConfigError):
        s.run("1")


def test_snapshot_restores_the_whole_state(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run(
            "let data = Array.from({length: 1000}, (_, i) => ({i}));\n"
            "class P { hi() { return 'hi' } }\nglobalThis.p = new P()"
        )
        snap = s.snapshot()
    assert isinstance(snap, bytes) and len(snap) < 2_000_000
    with sb.restore(snap) as again:
        assert again.run("[data.length, data[999].i, p.hi(), p instanceof P]").value == [
            1000,
            999,
            "hi",
            True,
        ]
        assert again.run("await tools.double({n: data.length})").value == 2000


def test_snapshot_restores_in_another_process(sb: Sandbox, tmp_path: object) -> None:
    with sb.session() as s:
        s.run("let note = 'from the parent'; let count = 41")
        snap = s.snapshot()
    code = """
import sys
from clambot_tools import Limits, Sandbox
def double(n: int) -> int:
    return n * 2
sb = Sandbox(bindings=[double], limits=Limits(timeout_s=0.5, memory_mb=32))
with sb.restore(sys.stdin.buffer.read()) as s:
    print(__import__('json').dumps(s.run('count += 1; [note, count]').value))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], input=snap, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == ["from the parent", 42]


def test_foreign_or_damaged_snapshots_are_refused(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run("let x = 1")
        snap = s.snapshot()
    with pytest.raises(SnapshotError, match="not a ClamBot snapshot"):
        sb.restore(b"hello")
    m = len(b"CLAMBOT-SNAPSHOT\n")
    hlen = int.from_bytes(snap[m : m + 4], "little")
    header = json.loads(snap[m + 4 : m + 4 + hlen])
    for field, value, message in [
        ("guest_sha256", "0" * 64, "another build of the guest"),
        ("format", 99, "format 99"),
        ("bindings", ["other"], "bindings"),
    ]:
        forged = json.dumps({**header, field: value}).encode()
        bad = snap[:m] + len(forged).to_bytes(4, "little") + forged + snap[m + 4 + hlen :]
        with pytest.raises(SnapshotError, match=message):
            sb.restore(bad)
    with pytest.raises(SnapshotError, match="damaged"):
        sb.restore(snap[:-50])
    other = Sandbox(bindings=[binding(lambda n: n, name="double2")])
    with pytest.raises(SnapshotError, match="bindings"):
        other.restore(snap)


def test_snapshots_hold_only_what_the_session_changed(sb: Sandbox) -> None:
    with sb.session() as s:
        s.run("let small = {a: 1}")
        assert len(s.snapshot()) < 200_000  # the start image itself is not repeated
        s.run("globalThis.big = Array.from({length: 20000}, (_, i) => 'row ' + i)")
        snap = s.snapshot()
    with sb.restore(snap) as again:
        assert again.run("[small.a, big.length, big[19999]]").value == [1, 20000, "row 19999"]


def test_snapshot_payload_round_trip_and_damage() -> None:
    import random

    from clambot_tools import _snapshot

    rnd = random.Random(7)
    base = bytes(rnd.getrandbits(8) for _ in range(5 * _snapshot.PAGE))
    memory = bytearray(base) + bytes(3 * _snapshot.PAGE + 100)
    memory[10] ^= 1
    memory[3 * _snapshot.PAGE + 5] ^= 1
    memory[-1] = 9
    payload = _snapshot.encode(bytes(memory), base)
    rebuilt = bytearray(base) + bytes(len(memory) - len(base))
    for offset, chunk in _snapshot.decode(payload, len(memory)):
        rebuilt[offset : offset + len(chunk)] = chunk
    assert rebuilt == memory
    with pytest.raises(ValueError):
        _snapshot.decode(payload[:-3], len(memory))
    with pytest.raises(ValueError):
        _snapshot.decode(payload, 2 * _snapshot.PAGE)  # pages beyond the stated size


def test_a_session_does_not_keep_every_script_it_ran() -> None:
    # each run's source was left in the guest's memory: 200 runs of 100 KB grew it 20 MB
    sb = Sandbox(limits=Limits(timeout_s=30))
    with sb.session() as s:
        s.run("1")
        before = s._guest.size()
        padding = "y" * 100_000
        for i in range(200):
            res = s.run(f"globalThis.v{i} = 1; '{padding}'.length")
            assert res.value == 100_000, res.error
        assert s._guest.size() - before < 8 << 20
