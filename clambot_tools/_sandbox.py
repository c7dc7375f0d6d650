"""Sandbox: the public facade. It holds what its runs share (bindings, policy, limits,
audit, the start image) and hands each run to `_run.Job`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._audit import AuditLog, AuditSink
from ._bindings import Binding, binding
from ._bytecode import bytecode_cache_of, plain_start
from ._calls import ApprovalMemory, CallSetup
from ._discovery import DEFAULT_MAX_CHARS, Discovery
from ._errors import ConfigError
from ._guest import Guest
from ._image import StartImage
from ._limits import Limits, store_limit
from ._policy import Policy
from ._result import RunResult
from ._run import FreshGuest, Job
from ._saved import SavedScripts, grant_scripts, library_of
from ._session import STACK_BYTES, Session, parse_snapshot
from ._shapes import ResultShapes
from ._snapshot import check_key
from ._startup import start_image

if TYPE_CHECKING:
    from ._bytecode import BytecodeCache
    from ._manifest import Manifest
    from .scripts import ScriptLibrary


class Sandbox(SavedScripts):
    """Runs untrusted JavaScript with no ambient authority.

    Each ``run`` starts from a clean QuickJS instance (globals and prototype changes do
    not leak between runs); the only ways out are the granted bindings, called as
    ``await tools.<name>({...})`` and decided by the policy. One Sandbox may be used from
    many threads and event loops at once; runs proceed in parallel (the GIL is released
    while wasm runs).

    Args:
        limits: time, memory, stack and output caps (defaults: 5 s, 64 MiB, 1 MiB logs
            and result).
        bindings: callables or ``binding(...)`` objects to grant.
        policy: which calls are allowed (default: every granted binding, 10,000 calls;
            writes refused unless approved).
        audit: where to write one record per run and per tool call: an ``AuditLog``,
            a path (JSON lines), a ``logging.Logger`` or a callable.
        manifest: a binding manifest (``bindings.lock``: a path, or a ``Manifest``
            with the public keys that must have signed it) the bindings must match.
        result_shapes: learn the shapes of tool results (never their values) for
            ``describe_tools``: True, or a ``ResultShapes`` to share between Sandboxes.
        snapshot_key: an HMAC-SHA256 key (bytes, or a str taken as UTF-8; at least 16
            bytes) that session snapshots are signed with; ``restore`` then refuses a
            snapshot without its signature.
        bytecode_cache: where compiled scripts are kept, so a script run again is not
            parsed again: True (the default) for the process's shared cache, a
            ``BytecodeCache`` of its own, or False for none. Never used with
            ``Limits.fuel`` (parsing counts against a deterministic budget).
        scripts: a ``ScriptLibrary`` (or a directory path for one) of saved scripts,
            for ``run_saved`` and ``save_script``.
        script_tools: saved scripts scripts may call as ``tools.<name>`` (names, or
            ``"name@3"`` for a version; True for every script's latest version), each
            run in a sandbox of its own by the calling run's deadline.

    Raises:
        ConfigError: a binding is invalid or two share a name, or the key is too short.
        ScriptError: `script_tools` names an unknown script, or one that calls tools
            that are not granted.
        ManifestError: the bindings differ from the manifest, or it is refused.
        GuestUnavailableError: the compiled guest is missing or does not load.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        bindings: Iterable[Binding | Any] = (),
        policy: Policy | None = None,
        audit: AuditLog | AuditSink | None = None,
        manifest: Manifest | str | os.PathLike[str] | None = None,
        result_shapes: ResultShapes | bool = False,
        snapshot_key: bytes | str | None = None,
        bytecode_cache: BytecodeCache | bool = True,
        scripts: ScriptLibrary | str | os.PathLike[str] | None = None,
        script_tools: Iterable[str] | bool = (),
    ) -> None:
        self._snapshot_key = check_key(snapshot_key)
        self.limits = limits if limits is not None else Limits()
        if not isinstance(self.limits, Limits):
            raise ConfigError("limits must be a clambot_tools.Limits")
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise ConfigError("policy must be a clambot_tools.Policy")
        granted = [binding(b) for b in bindings]
        self._scripts = library_of(scripts)
        self._script_tools = grant_scripts(self, self._scripts, script_tools, granted)
        if self._script_tools is not None:
            granted += self._script_tools.bindings
        names = [b.name for b in granted]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"two bindings share the name(s) {dupes}")
        if manifest is not None:
            from ._manifest import check

            check(granted, manifest)
        self.audit = audit if isinstance(audit, AuditLog) or audit is None else AuditLog(audit)
        self._bindings: tuple[Binding, ...] = tuple(granted)
        self._shapes = ResultShapes() if result_shapes is True else result_shapes or None
        discovery = Discovery(self._bindings, self.policy, self._shapes)
        self._names_block = b"".join(n.encode("utf-8", "surrogatepass") + b"\0" for n in names)
        self._names_block += discovery.names_block  # tools.$describe, tools.$search
        self._setup = CallSetup(
            bindings=self._bindings,
            policy=self.policy,
            limits=self.limits,
            audit=self.audit,
            approvals=ApprovalMemory(),
            discovery=discovery,
            shapes=self._shapes,
        )
        #: a sync binding may run inline on the driving thread, where nothing can stop
        #: it: then `run` drives on a package thread and waits at most the deadline
        self._drive_in_thread = any(not b.is_async for b in granted)
        self._store_limit = store_limit(self.limits)
        # Compile (or load) the guest now, so no run pays for it inside its deadline.
        self._image: StartImage = start_image(fuel=self.limits.fuel is not None)
        self._bytecode = bytecode_cache_of(bytecode_cache, self.limits)

    @property
    def bindings(self) -> Sequence[Binding]:
        """The granted bindings, in order."""
        return self._bindings

    @property
    def result_shapes(self) -> ResultShapes | None:
        """The result shapes this Sandbox learns (None unless asked for)."""
        return self._shapes

    def describe_tools(self, *, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
        """A TypeScript declaration of the global `tools` a script may call under the
        policy (argument and result types, one-line doc comments), for a model's
        prompt or a tool description. Longer than `max_chars` (None: no limit), it
        lists names and summaries only, and scripts read the rest with
        ``tools.$describe("name")`` / ``tools.$search("words")``."""
        from ._describe import describe

        return describe(self._bindings, self.policy, shapes=self._shapes, max_chars=max_chars)

    def _job(self, code: str, loop: Any = None) -> Job:
        host = FreshGuest(self._image, self._store_limit, self.limits.fuel)
        start = plain_start(self._bytecode, self._image.guest_sha256, code)
        setup = self._setup
        if self._script_tools is not None:
            setup = self._script_tools.for_run(setup, 0)
        return Job(setup, self._names_block, code, host, loop=loop, start=start)

    def run(self, code: str) -> RunResult:
        """Run `code` as one script and return its RunResult; never raises for anything
        the script does. Async bindings run on a private event loop thread. Ctrl-C
        stops the script within milliseconds and raises KeyboardInterrupt.

        Raises ConfigError only if `code` is not a str.
        """
        job = self._job(code)
        return job.in_thread() if self._drive_in_thread else job.execute()

    async def arun(self, code: str) -> RunResult:
        """The asyncio twin of `run`: async bindings run on the caller's event loop, the
        script on a package thread. Cancelling the task stops the script, cancels its
        pending tool calls (none starts afterwards) and raises CancelledError.

        Raises ConfigError only if `code` is not a str.
        """
        import asyncio

        return await self._job(code, asyncio.get_running_loop()).run_async()

    def session(self) -> Session:
        """A session: runs that keep their JavaScript globals between them.

        Raises GuestUnavailableError if no instance can be made.
        """
        return Session(self)

    def restore(self, snapshot: bytes) -> Session:
        """A session restored from `Session.snapshot()` bytes (this or another process).

        Raises SnapshotError if the bytes are not a snapshot, are damaged, come from
        another guest build or format, were made with other bindings, need more memory
        than this Sandbox's limits, or are not signed with this Sandbox's snapshot_key
        (or are signed while it has none).
        """
        return Session(self, parse_snapshot(self, snapshot))

    def _base_memory(self) -> bytes:
        """The start image's memory above the C stack (what a fresh instance holds)."""
        img = self._image
        if img.base_memory is None:
            with Guest(img, memory_limit_bytes=64 << 20) as g:
                img.base_memory = g.memory_image(STACK_BYTES)[1]
        return img.base_memory
