"""The process-wide start images: the guest compiled and initialised once, then cached.

The image depends only on the guest bytes and the engine settings (tool names are
installed per run), so one image serves every Sandbox in the process. It is a pure
function of those (the clock is frozen while it is made), so its disk-cache key needs
no template run: a warm start only deserializes.
"""

from __future__ import annotations

import wasmtime

from ._engine import Runtime, cached_module, get_runtime
from ._errors import GuestUnavailableError
from ._guest import Guest
from ._image import StartImage, describe_module, rewrite_with_memory
from ._limits import GUEST_C_STACK_KB
from ._once import Registry

_images: Registry[tuple[bool, bool], StartImage] = Registry()


def _image_wasm(runtime: Runtime) -> bytes:
    """The guest with its memory replaced by that of a freshly initialised instance."""
    plain = describe_module(runtime, runtime.plain_module(), needs_init=True)
    with Guest(plain, memory_limit_bytes=256 << 20) as template:
        memory = template.read(0, template.size())
    return rewrite_with_memory(runtime.wasm, memory, GUEST_C_STACK_KB * 1024)


def _build(runtime: Runtime) -> StartImage:
    try:
        module = cached_module(
            runtime.engine,
            b"start-image-v1\0" + runtime.wasm,
            runtime.fuel,
            lambda: _image_wasm(runtime),
        )
    except wasmtime.WasmtimeError as exc:
        raise GuestUnavailableError(f"the start image does not compile: {exc}") from exc
    return describe_module(runtime, module, needs_init=False)


def start_image(fuel: bool = False, long_lived: bool = False) -> StartImage:
    """The process-wide start image for the engine with or without fuel, for short runs
    or for sessions (two engines: see _engine._POOL_KEEP_RESIDENT).

    Raises GuestUnavailableError if the guest is missing or broken.
    """
    return _images.get((fuel, long_lived), lambda: _build(get_runtime(fuel, long_lived)))
