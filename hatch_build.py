"""Hatchling build hook: compile the guest into clambot_tools/_guest.wasm.

Runs on every wheel and editable build. Set CLAMBOT_GUEST_WASM to the path of a prebuilt
guest to skip the compile (it is copied as is); by default the guest is built from the
pinned QuickJS-NG sdist with the ziglang wheel (quickjs_wasm/build.py). A stamp next to
the output records the inputs, so an unchanged guest is not rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class GuestBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        out = root / "clambot_tools" / "_guest.wasm"
        stamp = out.with_name("_guest.wasm.stamp")
        prebuilt = os.environ.get("CLAMBOT_GUEST_WASM")
        if prebuilt:
            shutil.copyfile(prebuilt, out)
            stamp.unlink(missing_ok=True)
        else:
            spec = importlib.util.spec_from_file_location(
                "_clambot_guest_build", root / "quickjs_wasm" / "build.py"
            )
            assert spec is not None and spec.loader is not None
            build = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(build)
            h = hashlib.sha256()
            for name in ("guest.c", "build.py"):
                h.update((root / "quickjs_wasm" / name).read_bytes())
            h.update(build.SDIST_SHA256.encode())
            inputs = h.hexdigest()
            if not (out.exists() and stamp.exists() and stamp.read_text().strip() == inputs):
                self.app.display_info("clambot-tools: compiling the QuickJS-NG guest (~1 min)")
                build.build(out)
                stamp.write_text(inputs + "\n")
        build_data["force_include"][str(out)] = "clambot_tools/_guest.wasm"
