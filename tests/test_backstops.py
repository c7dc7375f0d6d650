"""The second walls: Wasmtime's epoch trap and native stack guard, exercised for real.

QuickJS's own interrupt and stack checks stop almost everything first, so these tests
switch the first wall off (the interrupt flag is pointed elsewhere; the native stack is
made small in a child process) and check that the second one still ends the run with
the right kind and leaves the Sandbox usable.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clambot_tools import Limits, Sandbox, _engine


def test_epoch_trap_stops_a_script_when_the_interrupt_never_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoy = ctypes.c_int32(0)
    real_watch = _engine.Ticker.watch

    def watch_decoy(self: _engine.Ticker, deadline: float, address: int) -> int:
        return real_watch(self, deadline, ctypes.addressof(decoy))

    monkeypatch.setattr(_engine.Ticker, "watch", watch_decoy)
    sb = Sandbox(limits=Limits(timeout_s=0.3))
    res = sb.run("while (true) {}")
    assert decoy.value == 1  # the ticker did fire, at the decoy
    assert res.error is not None and res.error.kind == "timeout"
    assert res.error.name == "TimeoutError"
    assert res.stats.duration_ms >= 300
    monkeypatch.undo()
    assert sb.run("1 + 1").value == 2


def test_native_stack_trap_is_a_stack_error(tmp_path: Path) -> None:
    code = """
import json
import clambot_tools._engine as e
e.NATIVE_STACK_BYTES = 192 * 1024
from clambot_tools import Limits, Sandbox
sb = Sandbox(limits=Limits(stack_kb=896))
res = sb.run("function f(n) { return n === 0 ? 0 : 1 + f(n - 1) } f(100000)")
after = sb.run("1 + 1")
print(json.dumps([res.error.kind, res.error.name, after.value]))
"""
    env = dict(os.environ, CLAMBOT_CACHE_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["stack", "StackOverflowError", 2]


def test_epoch_trap_also_stops_a_session_and_rolls_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoy = ctypes.c_int32(0)
    real_watch = _engine.Ticker.watch

    def watch_decoy(self: _engine.Ticker, deadline: float, address: int) -> int:
        return real_watch(self, deadline, ctypes.addressof(decoy))

    sb = Sandbox(limits=Limits(timeout_s=0.3))
    with sb.session() as s:
        s.run("let kept = 'yes'")
        monkeypatch.setattr(_engine.Ticker, "watch", watch_decoy)
        res = s.run("kept = 'no'; while (true) {}")
        monkeypatch.undo()
        assert res.error is not None and res.error.kind == "timeout"
        assert s.run("kept").value == "yes"
