"""The guest builds from source, reproducibly: the same inputs give the same bytes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rebuilding_the_guest_gives_the_installed_bytes(tmp_path: Path) -> None:
    out = tmp_path / "guest.wasm"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "quickjs_wasm" / "build.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    installed = ROOT / "clambot_tools" / "_guest.wasm"
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(installed.read_bytes()).hexdigest()
