"""Running saved scripts: by name (``Sandbox.run_saved``), and as tools of other scripts.

A saved script runs like any script, with three differences: its arguments are checked
against its schema before the run and arrive as the global ``args``; it can call only
the bindings it declares (the policy's allow-list narrowed to them); and it starts from
the bytecode cache whatever its size.

As a tool of another script (``Sandbox(script_tools=[...])``), a call runs the saved
script in a run of its own: a fresh sandbox, so the calling script (unreviewed code)
cannot reach into the reviewed one (its globals, prototypes, or what it sends to a
write binding); only the validated arguments cross. That run has the Sandbox's limits
but ends by the calling run's deadline; its own tool calls are decided by the same
policy and approver (an approver sees the saved script's code hash); the calls of one
run to saved scripts go one at a time (so one run holds at most one nested sandbox
per level), and saved scripts call saved scripts at most `MAX_NESTING` levels deep.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _jsonsafe, _wording
from ._audit import AuditLog
from ._bindings import EFFECTS, Binding, Effect, binding, to_json_bytes
from ._bytecode import BytecodeCache, ScriptStart
from ._calls import CallSetup
from ._context import current_call
from ._errors import ScriptArgumentsError, ScriptError
from ._image import StartImage
from ._limits import Limits
from ._policy import Policy
from ._result import RunResult
from ._run import FreshGuest, Job
from .scripts import SavedScript, ScriptLibrary

#: how deep saved scripts may call saved scripts
MAX_NESTING = 3
#: a nested run needs at least this much of its caller's time to be worth starting
_MIN_NESTED_S = 0.01


def library_of(given: ScriptLibrary | str | Any | None) -> ScriptLibrary | None:
    """The library for ``Sandbox(scripts=given)``. Raises ScriptError for a bad value."""
    if given is None or isinstance(given, ScriptLibrary):
        return given
    return ScriptLibrary(given)


def check_args(script: SavedScript, args: Any, max_bytes: int) -> bytes:
    """`args` as the JSON the script gets as ``args``.

    Raises ScriptArgumentsError when they are not one JSON object, do not fit the
    script's schema (naming each field) or are larger than `max_bytes`."""
    name = script.name
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise ScriptArgumentsError(
            f"the arguments of script {name} are one object of named arguments, "
            f"not {type(args).__name__}"
        )
    try:
        data = to_json_bytes(dict(args))
        value = _jsonsafe.loads(data.decode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as exc:
        raise ScriptArgumentsError(
            f"the arguments of script {name} are not JSON data: {exc}"
        ) from None
    from ._jsonschema import problems

    found = problems(script.args_schema, value)
    if found:
        raise ScriptArgumentsError(_wording.script_args_invalid(name, found), problems=found)
    if len(data) > max_bytes:
        raise ScriptArgumentsError(
            f"the arguments of script {name} are {len(data)} bytes, more than the "
            f"{max_bytes}-byte limit"
        )
    return data


def saved_job(
    sb: SavedScripts,
    script: SavedScript,
    args: Any,
    *,
    loop: asyncio.AbstractEventLoop | None,
    limits: Limits | None = None,
    depth: int = 0,
) -> Job:
    """A Job running `script` with `args` in `sb` (see the module doc).

    Raises ScriptArgumentsError for arguments the schema refuses, ScriptError if the
    script calls tools `sb` does not grant."""
    limits = limits or sb.limits
    args_json = check_args(script, args, limits.max_result_bytes)
    granted = {b.name for b in sb._bindings}
    missing = [n for n in script.bindings if n not in granted]
    if missing:
        raise ScriptError(_wording.script_needs(script.name, missing))
    policy = sb.policy
    allow = [n for n in script.bindings if policy.allow is None or n in policy.allow]
    setup = dataclasses.replace(
        sb._setup, policy=dataclasses.replace(policy, allow=allow), limits=limits
    )
    if sb._script_tools is not None:
        setup = sb._script_tools.for_run(setup, depth)
    host = FreshGuest(sb._image, sb._store_limit, limits.fuel)
    start = ScriptStart(
        cache=sb._bytecode,
        build=sb._image.guest_sha256,
        code_sha256=script.code_sha256,
        args_json=args_json,
    )
    tags: dict[str, Any] = {
        "script": script.name,
        "script_number": script.number,
        "script_version": script.version,
    }
    if depth:
        tags["script_depth"] = depth
    return Job(setup, sb._names_block, script.source, host, loop=loop, start=start, tags=tags)


class _RunState:
    """What the saved-script calls of one run share: its depth, and the lock that lets
    one nested run go at a time."""

    __slots__ = ("depth", "lock")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.lock: asyncio.Lock | None = None


class ScriptTools:
    """Saved scripts granted to a Sandbox's scripts as ``tools.<name>``: each a binding
    with the script's name, description and argument schema, and the effects of the
    tools it calls (so a policy that denies writes denies a script that writes)."""

    def __init__(
        self,
        sb: SavedScripts,
        library: ScriptLibrary,
        refs: Iterable[str],
        granted: Sequence[Binding],
    ) -> None:
        self._sb = sb
        self.scripts: dict[str, SavedScript] = {}
        for ref in refs:
            script = library.get(ref)
            if script.name in self.scripts:
                raise ScriptError(f"script {script.name} is granted twice")
            self.scripts[script.name] = script
        plain = {b.name: b for b in granted}
        for script in self.scripts.values():
            missing = [n for n in script.bindings if n not in plain and n not in self.scripts]
            if missing:
                raise ScriptError(_wording.script_needs(script.name, missing))
        self.bindings = [self._template(s, plain) for s in self.scripts.values()]

    def _effects(
        self, script: SavedScript, plain: Mapping[str, Binding], seen: frozenset[str]
    ) -> tuple[Effect, ...]:
        found: set[str] = set()
        for n in script.bindings:
            if n in plain:
                found.update(plain[n].effects)
            elif n in self.scripts and n not in seen:
                found.update(self._effects(self.scripts[n], plain, seen | {n}))
        return tuple(e for e in EFFECTS if e in found) or ("read",)

    def _template(self, script: SavedScript, plain: Mapping[str, Binding]) -> Binding:
        """The binding of `script` as the Sandbox holds it (each run gets its own, see
        `for_run`; a session's runs use this one: their calls are not serialised)."""
        b: Binding = binding(
            self._caller(script, _RunState(0), shared=False),
            name=script.name,
            description=script.description,
            json_schema=script.args_schema,
            effects=self._effects(script, plain, frozenset({script.name})),
        )
        origin = {"saved_script": script.name, "number": script.number, "version": script.version}
        return dataclasses.replace(b, origin=origin)

    def for_run(self, setup: CallSetup, depth: int) -> CallSetup:
        """`setup` with the saved-script bindings of one run at `depth`."""
        state = _RunState(depth)
        bindings = tuple(
            dataclasses.replace(b, func=self._caller(self.scripts[b.name], state, shared=True))
            if b.name in self.scripts
            else b
            for b in setup.bindings
        )
        return dataclasses.replace(setup, bindings=bindings)

    def _caller(self, script: SavedScript, state: _RunState, *, shared: bool) -> Any:
        async def run_saved_script(**kwargs: Any) -> Any:
            own = state if shared else _RunState(state.depth)
            return await self._call(script, kwargs, own)

        return run_saved_script

    async def _call(self, script: SavedScript, args: dict[str, Any], state: _RunState) -> Any:
        if state.depth >= MAX_NESTING:
            raise RuntimeError(_wording.nested_too_deep(MAX_NESTING))
        if state.lock is None:
            state.lock = asyncio.Lock()
        sb = self._sb
        async with state.lock:
            ctx = current_call()
            remaining = ctx.remaining() if ctx is not None else sb.limits.timeout_s
            if remaining < _MIN_NESTED_S:
                raise RuntimeError(f"no time was left to run saved script {script.name}")
            limits = dataclasses.replace(sb.limits, timeout_s=min(sb.limits.timeout_s, remaining))
            job = saved_job(
                sb,
                script,
                args,
                loop=asyncio.get_running_loop(),
                limits=limits,
                depth=state.depth + 1,
            )
            result = await job.run_async()
        if result.ok:
            return result.value
        err = result.error
        assert err is not None
        raise RuntimeError(_wording.saved_script_failed(script.name, err.kind, err.message))


def grant_scripts(
    sb: SavedScripts,
    library: ScriptLibrary | None,
    refs: Iterable[str] | bool,
    granted: Sequence[Binding],
) -> ScriptTools | None:
    """The saved scripts ``Sandbox(script_tools=refs)`` grants (True: every script's
    latest version), or None for none.

    Raises ScriptError without a library, for an unknown script, or one calling tools
    that are not granted."""
    if refs is False:
        return None
    if isinstance(refs, str):
        raise ScriptError("script_tools is a list of script names, not one string")
    names = None if refs is True else list(refs)
    if names == []:
        return None
    if library is None:
        raise ScriptError(_wording.NO_LIBRARY)
    if names is None:
        names = library.names()
    return ScriptTools(sb, library, names, granted) if names else None


class SavedScripts:
    """The saved-script half of the Sandbox facade: run scripts by name, save them."""

    # what the Sandbox holds (see _sandbox.Sandbox)
    limits: Limits
    policy: Policy
    audit: AuditLog | None
    _bindings: tuple[Binding, ...]
    _scripts: ScriptLibrary | None
    _script_tools: ScriptTools | None
    _drive_in_thread: bool
    _setup: CallSetup
    _image: StartImage
    _store_limit: int
    _bytecode: BytecodeCache | None
    _names_block: bytes

    @property
    def scripts(self) -> ScriptLibrary | None:
        """The library of saved scripts (None unless given)."""
        return self._scripts

    def _saved_job(self, name: str, args: Any, version: int | str | None, loop: Any) -> Job:
        if self._scripts is None:
            raise ScriptError(_wording.NO_LIBRARY)
        script = self._scripts.get(name, version)
        return saved_job(self, script, args, loop=loop)

    def run_saved(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: int | str | None = None,
    ) -> RunResult:
        """Run the saved script `name` (its latest version, or `version`: a number or
        a sha256 prefix) with `args` as its global ``args``, as ``run`` runs a script.
        The arguments are checked against the script's schema first; the script may
        call only the bindings it declares (and the policy allows).

        Raises ScriptArgumentsError (before anything runs) for arguments the schema
        refuses, naming each field; ScriptError for an unknown script or version, one
        changed after it was saved, one calling tools this Sandbox does not grant, or
        no library.
        """
        job = self._saved_job(name, args, version, None)
        return job.in_thread() if self._drive_in_thread else job.execute()

    async def arun_saved(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: int | str | None = None,
    ) -> RunResult:
        """The asyncio twin of `run_saved`. Raises as `run_saved` does."""
        import asyncio

        job = self._saved_job(name, args, version, asyncio.get_running_loop())
        return await job.run_async()

    def save_script(
        self,
        name: str,
        source: str,
        *,
        description: str,
        args_schema: Mapping[str, Any] | None = None,
        bindings: Iterable[str] = (),
    ) -> SavedScript:
        """Save `source` in the library as the next version of `name` (see
        ``ScriptLibrary.save``), decided by this Sandbox's policy (a write: the
        approver is asked) and audited in its audit log. `bindings` are the tools the
        script calls; each must be granted here.

        Raises ScriptError if the script is invalid or does not parse, needs tools not
        granted here, the save is refused or not approved, or there is no library.
        """
        library = self._library_for(name, bindings)
        return library.save(
            name,
            source,
            description=description,
            args_schema=args_schema,
            bindings=bindings,
            policy=self.policy,
            audit=self.audit,
        )

    async def asave_script(
        self,
        name: str,
        source: str,
        *,
        description: str,
        args_schema: Mapping[str, Any] | None = None,
        bindings: Iterable[str] = (),
    ) -> SavedScript:
        """The asyncio twin of `save_script`. Raises as `save_script` does."""
        library = self._library_for(name, bindings)
        return await library.asave(
            name,
            source,
            description=description,
            args_schema=args_schema,
            bindings=bindings,
            policy=self.policy,
            audit=self.audit,
        )

    def _library_for(self, name: str, bindings: Iterable[str]) -> ScriptLibrary:
        if self._scripts is None:
            raise ScriptError(_wording.NO_LIBRARY)
        granted = {b.name for b in self._bindings}
        missing = sorted({b for b in bindings if b not in granted} - {name})
        if missing:
            raise ScriptError(_wording.script_needs(name, missing))
        return self._scripts
