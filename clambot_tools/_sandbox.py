"""Sandbox: runs scripts in fresh guest instances and drives their tool calls."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._audit import AuditLog, AuditSink, canonical_digest, digest
from ._bindings import Binding, BindingArgumentError, binding, to_json_bytes
from ._context import CallContext, enter_call, leave_call
from ._engine import TICK_S
from ._errors import ConfigError, ErrorKind, SnapshotError, TransientError
from ._guest import ST_DONE, ST_ERROR, ST_WAIT, Guest, GuestTrap, Outcome
from ._image import StartImage, start_image
from ._limits import GUEST_C_STACK_KB, Limits
from ._policy import Approval, ApprovalRequest, Policy
from ._result import LOG_LEVELS, LogEntry, RunError, RunResult, RunStats

if TYPE_CHECKING:  # asyncio costs ~11 ms to import: only runs that need it pay
    import asyncio

_RESOLVE_OK, _RESOLVE_FAILED, _RESOLVE_DENIED, _RESOLVE_BAD_ARGS, _RESOLVE_TOO_LARGE = range(5)
#: after the soft deadline (QuickJS's interrupt), Wasmtime's epoch trap stops a script
#: that swallows the interrupt (e.g. `finally { continue }`) this much later
_HARD_GRACE_S = 0.1
_MIB = 1 << 20
_STACK_BYTES = GUEST_C_STACK_KB * 1024


def _store_limit(lim: Limits) -> int:
    """The cap on a guest's linear memory (the second wall behind the JS heap's cap): the
    heap cap, the C stack, room for two result buffers, and 32 MiB for static data and
    the allocator's pre-GC reserve."""
    return lim.memory_mb * _MIB + 2 * lim.max_result_bytes + _STACK_BYTES + 32 * _MIB


#: in a session, a run that ends with one of these is rolled back
_RESTORE_KINDS = frozenset({"timeout", "memory", "stack", "output_limit", "internal"})
#: a sync binding whose calls take less than this runs inline, in the run's own thread:
#: a thread-pool hop would cost more than the call (and its concurrency buys nothing)
_INLINE_BELOW_S = 100e-6

_TRAP_NAMES: dict[ErrorKind, str] = {
    "timeout": "TimeoutError",
    "memory": "MemoryLimitError",
    "stack": "StackOverflowError",
    "output_limit": "OutputLimitError",
    "internal": "InternalError",
}

_pool: cf.ThreadPoolExecutor | None = None
_bg_loop: asyncio.AbstractEventLoop | None = None
_shared_lock = threading.Lock()


def _binding_pool() -> cf.ThreadPoolExecutor:
    global _pool
    with _shared_lock:
        if _pool is None:
            _pool = cf.ThreadPoolExecutor(max_workers=32, thread_name_prefix="clambot-binding")
        return _pool


def _background_loop() -> asyncio.AbstractEventLoop:
    """An event loop on a daemon thread, for async bindings called from sync `run`."""
    global _bg_loop
    import asyncio

    with _shared_lock:
        if _bg_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="clambot-async-bindings", daemon=True
            ).start()
            _bg_loop = loop
        return _bg_loop


class Sandbox:
    """Runs untrusted JavaScript with no ambient authority.

    Each ``run`` starts from a clean QuickJS instance (globals and prototype changes do
    not leak between runs); the only ways out are the granted bindings, called as
    ``await tools.<name>({...})`` and decided by the policy. One Sandbox may be used from
    many threads at once; runs proceed in parallel (the GIL is released while wasm runs).

    Args:
        limits: time, memory, stack and output caps (defaults: 5 s, 64 MiB, 1 MiB logs
            and result).
        bindings: callables or ``binding(...)`` objects to grant.
        policy: which calls are allowed (default: every granted binding, 1000 calls).
        audit: where to write one record per run and per tool call: an ``AuditLog``,
            a path (JSON lines), a ``logging.Logger`` or a callable.

    Raises:
        ConfigError: a binding is invalid or two share a name.
        GuestUnavailableError: the compiled guest is missing or does not load.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        bindings: Iterable[Binding | Any] = (),
        policy: Policy | None = None,
        audit: AuditLog | AuditSink | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        if not isinstance(self.limits, Limits):
            raise ConfigError("limits must be a clambot_tools.Limits")
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise ConfigError("policy must be a clambot_tools.Policy")
        self._bindings: list[Binding] = [binding(b) for b in bindings]
        names = [b.name for b in self._bindings]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"two bindings share the name(s) {dupes}")
        self.audit = audit if isinstance(audit, AuditLog) or audit is None else AuditLog(audit)
        self._session_approved: set[str] = set()
        #: seconds per call of each sync binding (moving average): fast ones run inline
        self._timing: dict[str, float] = {}
        self._approved_lock = threading.Lock()
        self._names_block = b"".join(n.encode("utf-8", "surrogatepass") + b"\0" for n in names)
        # Compile (or load) the guest now, so no run pays for it inside its deadline.
        self._image: StartImage = start_image(fuel=self.limits.fuel is not None)

    @property
    def bindings(self) -> Sequence[Binding]:
        """The granted bindings, in order."""
        return tuple(self._bindings)

    def session(self) -> Session:
        """A session: runs that keep their JavaScript globals between them.

        Raises GuestUnavailableError if no instance can be made.
        """
        return Session(self)

    def restore(self, snapshot: bytes) -> Session:
        """A session restored from `Session.snapshot()` bytes (this or another process).

        Raises SnapshotError if the bytes are not a snapshot, are damaged, come from
        another guest build or format, or were made with other bindings.
        """
        return Session(self, _parse_snapshot(self, snapshot))

    def _base_memory(self) -> bytes:
        """The start image's memory above the C stack (what a fresh instance holds)."""
        img = self._image
        if img.base_memory is None:
            g = Guest(img, memory_limit_bytes=64 * _MIB)
            try:
                img.base_memory = g.memory_image(_STACK_BYTES)[1]
            finally:
                g.close()
        return img.base_memory

    def _is_fast(self, b: Binding) -> bool:
        t = self._timing.get(b.name)
        return t is not None and t < _INLINE_BELOW_S

    def _note_duration(self, b: Binding, seconds: float) -> None:
        old = self._timing.get(b.name)
        self._timing[b.name] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def describe_tools(self) -> str:
        """A TypeScript declaration of the global `tools` (names, argument types, doc
        comments from descriptions), for a model's prompt or a tool description."""
        from ._describe import describe

        return describe(self._bindings)

    def run(self, code: str) -> RunResult:
        """Run `code` as one script and return its RunResult; never raises for anything
        the script does. Async bindings run on a private event loop thread.

        Raises ConfigError only if `code` is not a str.
        """
        return _Run(self, code, None).execute()

    async def arun(self, code: str) -> RunResult:
        """The asyncio twin of `run`: async bindings run on the caller's event loop.
        Cancelling it stops the script at once.

        Raises ConfigError only if `code` is not a str.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        job = _Run(self, code, loop)
        fut = loop.run_in_executor(None, job.execute)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            job.cancel()
            raise


_JS_LINE_BREAKS = re.compile("\r\n|[\n\r\u2028\u2029]")


def _char_column(code: str, line: int, column: int) -> int:
    """QuickJS counts columns in UTF-8 bytes; a person (and a model) counts characters."""
    lines = _JS_LINE_BREAKS.split(code)
    if not 1 <= line <= len(lines):
        return column
    text = lines[line - 1]
    if text.isascii():
        return column
    prefix = text.encode("utf-8", "surrogatepass")[: max(0, column - 1)]
    return len(prefix.decode("utf-8", "ignore")) + 1


class _Denied(Exception):
    """An approver (or a failing approver) refused a call."""


class _Call:
    """A tool call in flight."""

    __slots__ = (
        "attempts",
        "binding",
        "call_id",
        "ctx",
        "data",
        "decision",
        "kwargs",
        "started",
    )

    def __init__(
        self,
        call_id: int,
        binding: Binding,
        data: bytes,
        kwargs: dict[str, Any],
        started: float,
        deadline: float,
    ) -> None:
        self.call_id = call_id
        self.binding = binding
        self.data = data
        self.kwargs = kwargs
        self.started = started
        self.decision = "allowed"
        self.attempts = 0
        self.ctx = CallContext(binding.name, deadline)


def _is_awaitable(x: Any) -> bool:
    import inspect

    return inspect.isawaitable(x)


async def _await(x: Any) -> Any:
    return await x


class _Run:
    """One execution of one script: the guest, its logs, its tool calls."""

    def __init__(
        self,
        sb: Sandbox,
        code: str,
        loop: asyncio.AbstractEventLoop | None,
        session: Session | None = None,
    ) -> None:
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, got {type(code).__name__}")
        self.sb = sb
        self.session = session
        self.code = code
        self.loop = loop
        self.limits = sb.limits
        self.logs: list[LogEntry] = []
        self.log_bytes = 0
        self.new_calls: list[_Call] = []
        self.calls_made = 0
        self.ready: deque[tuple[int, int, bytes]] = deque()
        self.running: dict[cf.Future[Any], _Call] = {}
        self.deadline = time.monotonic() + sb.limits.timeout_s
        self._code_sha256: str | None = None
        #: approval requests so far by (binding, args digest): a call's occurrence
        self.occurrences: dict[tuple[str, str], int] = {}
        self.guest: Guest | None = None
        self.cancelled = False
        self._cancel_lock = threading.Lock()

    # -- guest callbacks

    def on_log(self, level: int, data: bytes) -> bool:
        lvl = LOG_LEVELS[level] if 0 <= level < len(LOG_LEVELS) else "log"
        room = self.limits.max_log_bytes - self.log_bytes
        if len(data) > room:
            if room > 0:
                cut = data[:room].decode("utf-8", "ignore")
                self.logs.append(LogEntry(level=lvl, message=cut + " [... cut: log limit]"))
            self.log_bytes = self.limits.max_log_bytes
            return False
        self.log_bytes += len(data)
        text = data.decode("utf-8", "replace")
        self.logs.append(LogEntry.model_construct(level=lvl, message=text))
        return True

    def on_call(self, call_id: int, tool: int, data: bytes) -> int:
        """A tool call from the guest. Refusals and invalid arguments are answered at
        once; a sync binding known to be fast (under 100 us) runs right here, inline;
        anything else is queued for the pool or the event loop."""
        b = self.sb._bindings[tool] if 0 <= tool < len(self.sb._bindings) else None
        if b is None:
            return self._answer(call_id, _RESOLVE_DENIED, b"no such tool", None, data, "denied")
        refusal = self.sb.policy.refusal(b, self.calls_made)
        self.calls_made += 1
        if refusal is not None:
            return self._answer(call_id, _RESOLVE_DENIED, refusal.encode(), b, data, "denied")
        try:
            kwargs = b.validate(json.loads(data))
        except BindingArgumentError as exc:
            return self._answer(
                call_id, _RESOLVE_BAD_ARGS, str(exc).encode(), b, data, "invalid_args"
            )
        except ValueError:
            return self._answer(
                call_id, _RESOLVE_BAD_ARGS, b"arguments are not JSON", b, data, "invalid_args"
            )
        call = _Call(call_id, b, data, kwargs, time.monotonic(), self.deadline)
        if not b.is_async and self.sb._is_fast(b) and not self.sb.policy.needs_approval(b):
            t0 = time.perf_counter()
            token = enter_call(call.ctx)
            try:
                call.attempts = 1
                value = b.func(**kwargs)
            except TransientError:
                self.sb._timing.pop(b.name, None)  # retries belong on the pool
                self.new_calls.append(call)
                return 0
            except BaseException as exc:  # noqa: BLE001 - the script sees only the message
                self.sb._note_duration(b, time.perf_counter() - t0)
                return self._finish_call(call, exc, None, inline=True)
            finally:
                leave_call(token)
            self.sb._note_duration(b, time.perf_counter() - t0)
            return self._finish_call(call, None, value, inline=True)
        self.new_calls.append(call)
        return 0

    def _answer(
        self,
        call_id: int,
        status: int,
        payload: bytes,
        b: Binding | None,
        data: bytes,
        decision: str,
    ) -> int:
        self._audit_call(b, data, decision, decision, 0.0, 0)
        return self._deliver(call_id, status, payload, inline=True)

    def _deliver(self, call_id: int, status: int, payload: bytes, *, inline: bool) -> int:
        if inline and self.guest is not None:
            answered = self.guest.answer_now(status, payload)
            if answered:
                return answered
        self.ready.append((call_id, status, payload))
        return 0

    @property
    def code_sha256(self) -> str:
        if self._code_sha256 is None:
            self._code_sha256 = digest(self.code)
        return self._code_sha256

    def _dispatch(self) -> None:
        calls, self.new_calls = self.new_calls, []
        for call in calls:
            fut: cf.Future[Any]
            if call.binding.is_async:
                import asyncio

                loop = self.loop or _background_loop()
                fut = asyncio.run_coroutine_threadsafe(self._invoke_async(call), loop)
            else:
                fut = _binding_pool().submit(self._invoke_sync, call)
            self.running[fut] = call

    # Approval and retries run where the binding runs (pool thread or event loop), so
    # a slow human or a backoff never blocks the run's driver.

    def _approval_request(self, call: _Call) -> ApprovalRequest | None:
        b = call.binding
        if not self.sb.policy.needs_approval(b) or b.name in self.sb._session_approved:
            return None
        args_sha256 = canonical_digest(call.kwargs)
        key = (b.name, args_sha256)
        with self._cancel_lock:
            occurrence = self.occurrences.get(key, 0)
            self.occurrences[key] = occurrence + 1
        return ApprovalRequest(
            binding=b.name,
            description=b.description,
            effects=b.effects,
            args=dict(call.kwargs),
            code_sha256=self.code_sha256,
            args_sha256=args_sha256,
            occurrence=occurrence,
            request_id=digest(f"{b.name}\0{args_sha256}\0{self.code_sha256}\0{occurrence}")[:32],
        )

    def _apply_answer(self, call: _Call, answer: Any) -> None:
        if answer is True or answer == Approval.ALLOW_ONCE:
            call.decision = "approved"
            return
        if answer == Approval.ALLOW_SESSION:
            with self.sb._approved_lock:
                self.sb._session_approved.add(call.binding.name)
            call.decision = "approved_for_session"
            return
        call.decision = "approval_denied"
        raise _Denied(f"tools.{call.binding.name} was not approved")

    def _retry_kwargs(self) -> dict[str, Any]:
        import tenacity

        pol = self.sb.policy
        return {
            "stop": tenacity.stop_after_attempt(pol.retry_attempts)
            | tenacity.stop_after_delay(max(0.0, self.deadline - time.monotonic())),
            "wait": tenacity.wait_exponential(
                multiplier=pol.retry_backoff_s, max=pol.retry_max_backoff_s
            ),
            "retry": tenacity.retry_if_exception_type(TransientError),
            "reraise": True,
        }

    def _invoke_sync(self, call: _Call) -> Any:
        import tenacity

        request = self._approval_request(call)
        if request is not None:
            approve = self.sb.policy.approve
            assert approve is not None
            try:
                answer = approve(request)
                if _is_awaitable(answer):
                    import asyncio

                    loop = self.loop or _background_loop()
                    answer = asyncio.run_coroutine_threadsafe(_await(answer), loop).result()
            except Exception as exc:
                raise _Denied(f"tools.{call.binding.name} was not approved") from exc
            self._apply_answer(call, answer)
        token = enter_call(call.ctx)
        try:
            for attempt in tenacity.Retrying(**self._retry_kwargs()):
                with attempt:
                    call.attempts += 1
                    t0 = time.perf_counter()
                    value = call.binding.func(**call.kwargs)
                    self.sb._note_duration(call.binding, time.perf_counter() - t0)
                    return value
        finally:
            leave_call(token)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _invoke_async(self, call: _Call) -> Any:
        import asyncio

        import tenacity

        request = self._approval_request(call)
        if request is not None:
            approve = self.sb.policy.approve
            assert approve is not None
            try:
                answer: Any = await asyncio.to_thread(approve, request)
                if _is_awaitable(answer):
                    answer = await answer
            except Exception as exc:
                raise _Denied(f"tools.{call.binding.name} was not approved") from exc
            self._apply_answer(call, answer)
        enter_call(call.ctx)  # this task's own context: nothing to reset
        async for attempt in tenacity.AsyncRetrying(**self._retry_kwargs()):
            with attempt:
                call.attempts += 1
                return await call.binding.func(**call.kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _collect(self, fut: cf.Future[Any]) -> None:
        call = self.running.pop(fut)
        try:
            value = fut.result()
        except BaseException as exc:  # noqa: BLE001 - turned into the script's error below
            self._finish_call(call, exc, None, inline=False)
            return
        self._finish_call(call, None, value, inline=False)

    def _finish_call(
        self, call: _Call, exc: BaseException | None, value: Any, *, inline: bool
    ) -> int:
        """Turn a call's result or exception into the guest's answer, and audit it."""
        elapsed = (time.monotonic() - call.started) * 1000
        if isinstance(exc, _Denied):
            status, payload, outcome = _RESOLVE_DENIED, str(exc).encode(), "denied"
        elif exc is not None:
            msg = str(exc).strip() or "the tool failed"
            status, payload, outcome = _RESOLVE_FAILED, msg.encode("utf-8", "replace"), "failed"
        else:
            try:
                payload = to_json_bytes(value)
                status, outcome = _RESOLVE_OK, "ok"
            except (TypeError, ValueError) as err:
                payload = f"the tool returned a value that is not JSON data: {err}".encode()
                status, outcome = _RESOLVE_FAILED, "failed"
            if status == _RESOLVE_OK and len(payload) > self.limits.max_result_bytes:
                payload = (
                    f"the tool's result ({len(payload)} bytes) is larger than the "
                    f"{self.limits.max_result_bytes}-byte limit"
                ).encode()
                status, outcome = _RESOLVE_TOO_LARGE, "too_large"
        self._audit_call(call.binding, call.data, call.decision, outcome, elapsed, call.attempts)
        return self._deliver(call.call_id, status, payload, inline=inline)

    def _abandon_calls(self) -> None:
        """The run is over: calls not started never will be; running ones are cancelled
        (async ones stop at their next await; a sync one already running finishes in
        its pool thread, its result dropped)."""
        for call in self.new_calls:
            self._audit_call(call.binding, call.data, call.decision, "abandoned", 0.0, 0)
        self.new_calls.clear()
        for fut, call in self.running.items():
            call.ctx.cancel()
            fut.cancel()
            elapsed = (time.monotonic() - call.started) * 1000
            self._audit_call(
                call.binding, call.data, call.decision, "abandoned", elapsed, call.attempts
            )
        self.running.clear()

    def _audit_call(
        self,
        b: Binding | None,
        data: bytes,
        decision: str,
        outcome: str,
        duration_ms: float,
        attempts: int,
    ) -> None:
        audit = self.sb.audit
        if audit is None:
            return
        record: dict[str, Any] = {
            "event": "call",
            "code_sha256": self.code_sha256,
            "binding": b.name if b is not None else None,
            "args_sha256": digest(data),
            "decision": decision,
            "outcome": outcome,
            "duration_ms": round(duration_ms, 3),
            "attempts": attempts,
        }
        if audit.include_args:
            record["args"] = data.decode("utf-8", "replace")
        audit.emit(record)

    # -- the run

    def cancel(self) -> None:
        """Stop the script as soon as possible (used when `arun` is cancelled)."""
        with self._cancel_lock:
            self.cancelled = True
            if self.guest is not None and not self.guest.closed:
                self.guest.interrupt()

    def execute(self) -> RunResult:
        """Run the script to its end; audit the run when an audit log is set."""
        result = self._execute()
        if self.sb.audit is not None:
            self.sb.audit.emit(
                {
                    "event": "run",
                    "code_sha256": self.code_sha256,
                    "outcome": "ok" if result.error is None else result.error.kind,
                    "duration_ms": round(result.stats.duration_ms, 3),
                    "binding_calls": result.stats.binding_calls,
                    "memory_bytes": result.stats.memory_bytes,
                }
            )
        return result

    def _execute(self) -> RunResult:
        lim = self.limits
        t0 = time.perf_counter()
        self.deadline = deadline = time.monotonic() + lim.timeout_s
        mem_bytes = lim.memory_mb * _MIB
        token = None
        out: Outcome | None = None
        checkpoint: tuple[int, bytes] | None = None
        result: RunResult | None = None
        try:
            try:
                if self.session is not None:
                    guest = self.session._guest
                    checkpoint = guest.memory_image(_STACK_BYTES)
                    if lim.fuel is not None:
                        guest.set_fuel(lim.fuel)
                else:
                    guest = Guest(
                        self.sb._image, memory_limit_bytes=_store_limit(lim), fuel=lim.fuel
                    )
            except GuestTrap as exc:
                return self._failure(exc.kind, exc.message, t0)
            with self._cancel_lock:
                self.guest = guest
            guest.on_log = self.on_log
            guest.on_call = self.on_call
            guest.set_epoch_deadline(math.ceil((lim.timeout_s + _HARD_GRACE_S) / TICK_S) + 1)
            ticker = guest.runtime.ticker  # the guest's own engine: its epoch must advance
            token = ticker.watch(deadline, guest.interrupt_address)
            if self.cancelled:
                result = self._failure("timeout", "the run was cancelled", t0)
                return result
            seed = int.from_bytes(os.urandom(8), "little") >> 1
            out = guest.eval(
                self.sb._names_block,
                self.code.encode("utf-8", "surrogatepass"),
                mem_bytes,
                lim.max_result_bytes,
                lim.stack_kb * 1024,
                seed,
            )
            while out.state == ST_WAIT:
                self._dispatch()
                if self.ready:
                    call_id, status, payload = self.ready.popleft()
                    out = guest.resolve(call_id, status, payload)
                    continue
                now = time.monotonic()
                wait_s = deadline - now
                if out.next_timer_ms >= 0:
                    wait_s = min(wait_s, out.next_timer_ms / 1000)
                if deadline - now <= 0 or self.cancelled:
                    result = self._timeout(t0)
                    return result
                if self.running:
                    done, _ = cf.wait(
                        list(self.running), timeout=max(0.0, wait_s), return_when=cf.FIRST_COMPLETED
                    )
                    for fut in done:
                        self._collect(fut)
                    if done:
                        continue
                elif wait_s > 0:
                    time.sleep(wait_s)
                if time.monotonic() >= deadline:
                    result = self._timeout(t0)
                    return result
                if out.next_timer_ms >= 0:
                    out = guest.timers()
            result = self._finish(out, t0)
            return result
        except GuestTrap as exc:
            if exc.kind == "timeout" and self.cancelled:
                result = self._failure("timeout", "the run was cancelled", t0)
            else:
                result = self._failure(exc.kind, self._trap_message(exc), t0)
            return result
        finally:
            self._abandon_calls()
            if token is not None:
                ticker.unwatch(token)
            with self._cancel_lock:
                if self.session is None:
                    if self.guest is not None:
                        self.guest.close()
                elif result is None or (
                    result.error is not None and result.error.kind in _RESTORE_KINDS
                ):
                    # a limit stopped the script somewhere in the middle: put the session
                    # back as it was before this run, in a clean instance
                    assert checkpoint is not None
                    self.session._reload(*checkpoint)
                    if result is not None and result.error is not None:
                        err = result.error.model_copy(
                            update={
                                "message": result.error.message + " (the session was restored "
                                "to its state before this run)"
                            }
                        )
                        object.__setattr__(result, "error", err)

    def _trap_message(self, exc: GuestTrap) -> str:
        lim = self.limits
        if exc.kind == "timeout" and lim.fuel is None:
            return f"the script ran longer than its {lim.timeout_s:g} s time limit"
        if exc.kind == "memory":
            return f"the script needed more than its {lim.memory_mb} MiB memory limit"
        if exc.kind == "output_limit":
            return f"console output exceeded the {lim.max_log_bytes}-byte log limit"
        return exc.message

    def _stats(self, t0: float, out: Outcome | None = None) -> RunStats:
        g = self.guest
        # model_construct: these values are ours and already typed; validation would
        # cost more than the rest of a small run's Python side
        return RunStats.model_construct(
            duration_ms=(time.perf_counter() - t0) * 1000,
            memory_bytes=out.mem_used if out is not None else None,
            binding_calls=self.calls_made,
            fuel_used=g.fuel_used() if g is not None and not g.closed else None,
        )

    def _failure(self, kind: ErrorKind, message: str, t0: float) -> RunResult:
        # model_construct throughout: our own typed values, and validating would build
        # pydantic's schemas on the first failing run (~20 ms after a deadline)
        err = RunError.model_construct(
            kind=kind,
            name=_TRAP_NAMES.get(kind, "Error"),
            message=message,
            stack=None,
            line=None,
            column=None,
        )
        return RunResult.model_construct(
            ok=False, value=None, logs=self.logs, error=err, stats=self._stats(t0)
        )

    def _timeout(self, t0: float) -> RunResult:
        return self._failure(
            "timeout", f"the script ran longer than its {self.limits.timeout_s:g} s time limit", t0
        )

    def _finish(self, out: Outcome, t0: float) -> RunResult:
        text = out.payload.decode("utf-8", "surrogatepass")
        if out.state == ST_DONE:
            try:
                value = json.loads(text)
            except ValueError as exc:
                return self._failure("internal", f"the result could not be read: {exc}", t0)
            return RunResult.model_construct(
                ok=True, value=value, logs=self.logs, error=None, stats=self._stats(t0, out)
            )
        assert out.state == ST_ERROR
        try:
            rec = json.loads(text)
            kind: ErrorKind = rec["kind"]
            name, message, stack = rec["name"], rec["message"], rec.get("stack")
        except (ValueError, KeyError, TypeError) as exc:
            return self._failure("internal", f"the error could not be read: {exc}", t0)
        message = message.encode("utf-8", "replace").decode("utf-8")
        if kind == "timeout":
            message = f"the script ran longer than its {self.limits.timeout_s:g} s time limit"
        err = RunError.from_js(kind, name, message, stack)
        if err.line is not None and err.column is not None:
            err = err.model_copy(update={"column": _char_column(self.code, err.line, err.column)})
        return RunResult.model_construct(
            ok=False, value=None, logs=self.logs, error=err, stats=self._stats(t0, out)
        )


# ---------------------------------------------------------------- sessions


class Session:
    """A sequence of runs that share one JavaScript global state (the REPL style:
    ``let x = 1`` then ``x + 1``). Made by ``Sandbox.session()``; use it as a context
    manager or call ``close()``.

    Runs in a session are serialised (one at a time, from any thread). A run that hits
    a limit (timeout, memory, stack, output) is rolled back: the session is restored to
    its state before that run, and the error message says so. A run that merely throws
    keeps what it did before the throw, as a REPL would. Timers left by a run are
    dropped when the next run starts.
    """

    def __init__(
        self, sb: Sandbox, memory: tuple[int, list[tuple[int, bytes]]] | None = None
    ) -> None:
        self._sb = sb
        self._lock = threading.Lock()
        self._closed = False
        self._guest = self._new_guest()
        if memory is not None:  # a fresh instance holds the start image: patch it
            size, regions = memory
            try:
                self._guest.load_memory_image(size, _STACK_BYTES, b"")  # grow once
                for offset, chunk in regions:
                    self._guest.write(_STACK_BYTES + offset, chunk)
            except GuestTrap as exc:
                self._guest.close()
                raise SnapshotError(exc.message) from None

    def _new_guest(self) -> Guest:
        lim = self._sb.limits
        image = start_image(fuel=lim.fuel is not None, long_lived=True)
        return Guest(image, memory_limit_bytes=_store_limit(lim), fuel=lim.fuel)

    def _reload(self, size: int, data: bytes) -> None:
        old, self._guest = self._guest, self._new_guest()
        old.close()
        self._guest.load_memory_image(size, _STACK_BYTES, data)

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this session is closed")

    def run(self, code: str) -> RunResult:
        """Run `code` in this session's global state; see `Sandbox.run`.

        Raises ConfigError if `code` is not a str or the session is closed.
        """
        with self._lock:
            self._check_open()
            return _Run(self._sb, code, None, session=self).execute()

    async def arun(self, code: str) -> RunResult:
        """The asyncio twin of `run` (async bindings run on the caller's loop).

        Raises ConfigError if `code` is not a str or the session is closed.
        """
        import asyncio

        loop = asyncio.get_running_loop()

        def locked() -> RunResult:
            with self._lock:
                self._check_open()
                return job.execute()

        job = _Run(self._sb, code, loop, session=self)
        fut = loop.run_in_executor(None, locked)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            job.cancel()
            raise

    def snapshot(self) -> bytes:
        """The whole JavaScript state of this session as bytes: versioned (the guest's
        hash and a format number inside), compressed, restorable with
        ``Sandbox.restore`` in another process or on another machine.

        Raises ConfigError if the session is closed.
        """
        from . import _snapshot

        with self._lock:  # held while reading: no run may change the memory meanwhile
            self._check_open()
            view = self._guest.memory_view(_STACK_BYTES)
            try:
                return _snapshot.pack(
                    view,
                    self._sb._base_memory(),
                    guest_sha256=self._sb._image.guest_sha256,
                    bindings=[b.name for b in self._sb._bindings],
                    memory_bytes=len(view) + _STACK_BYTES,
                )
            finally:
                view.release()

    def close(self) -> None:
        """Free the session's instance. Safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._guest.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_snapshot(sb: Sandbox, data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    from . import _snapshot

    return _snapshot.unpack(
        data,
        guest_sha256=sb._image.guest_sha256,
        bindings=[b.name for b in sb._bindings],
        skip=_STACK_BYTES,
    )
