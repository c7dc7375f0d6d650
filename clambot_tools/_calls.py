"""Tool calls of one run: policy, validation, approval, retries, where they run, audit.

A run owns every call it starts. While the run is open, a call goes: decided (allow-
list, effects, call cap, argument schema) at once on the run's thread; then either run
right there ("inline": a sync binding known to take under 100 us and needing no
approval), or queued and started on the package's call pool (sync) or an event loop
(async), at most `Limits.max_concurrent_calls` at a time; approval and retries happen
where the call runs. When the run ends (`close`), nothing of it may start, retry or be
approved any more: queued calls are dropped, async ones cancelled, a sync one already
inside its function is left to finish (Python cannot stop it) and its result is
discarded; a late approval is recorded as ``expired``. Every call gets an audit record
saying what really happened to it, including a second one (``event: call_late``) for
a sync call that finished after its run.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _jsonsafe, _telemetry, _wording
from ._abi import Resolve
from ._audit import AuditLog, canonical_digest, digest
from ._bindings import Binding, BindingArgumentError, to_json_bytes
from ._context import CallContext, enter_call, leave_call
from ._errors import TransientError
from ._limits import Limits
from ._policy import Approval, ApprovalRequest, Policy
from ._pools import background_loop, call_pool

if TYPE_CHECKING:
    import asyncio

    from ._discovery import Discovery
    from ._shapes import ResultShapes

#: a sync binding whose calls take less than this runs inline, on the run's own
#: thread: a pool hop would cost more than the call (and its concurrency buys nothing)
INLINE_BELOW_S = 100e-6


class ApprovalMemory:
    """Bindings a human allowed for the rest of a scope (``Approval.ALLOW_SESSION``): a
    Sandbox for its plain runs, or one Session."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._names

    def add(self, name: str) -> None:
        """Remember `name` as allowed in this scope."""
        with self._lock:
            self._names.add(name)


@dataclass
class CallSetup:
    """What a run's calls need from their Sandbox (shared by its runs)."""

    bindings: Sequence[Binding]
    policy: Policy
    limits: Limits
    audit: AuditLog | None
    approvals: ApprovalMemory
    #: seconds per call of each sync binding (moving average): fast ones run inline
    timing: dict[str, float] = field(default_factory=dict)
    #: the built-in tools.$describe / tools.$search (after the bindings in `tools`)
    discovery: Discovery | None = None
    #: where successful results' shapes are learned (Sandbox(result_shapes=...))
    shapes: ResultShapes | None = None
    #: ids of the Sandbox and of the Session (None for plain runs), for traces
    sandbox_id: str = field(default_factory=lambda: os.urandom(8).hex())
    session_id: str | None = None

    def callable_names(self) -> list[str]:
        """The names a script may call: the bindings the policy lets through (those
        that ask for approval included), then the built-ins."""
        from ._describe import visible

        names = [b.name for b, _ in visible(self.bindings, self.policy)]
        return names + (list(self.discovery.names) if self.discovery is not None else [])

    def is_fast(self, b: Binding) -> bool:
        t = self.timing.get(b.name)
        return t is not None and t < INLINE_BELOW_S

    def note_duration(self, b: Binding, seconds: float) -> None:
        old = self.timing.get(b.name)
        self.timing[b.name] = seconds if old is None else 0.8 * old + 0.2 * seconds


class _Stop(Exception):
    """A call that must not (or did not) go ahead; it is already recorded, and `status`
    and `payload` answer the script."""

    def __init__(self, status: Resolve, payload: bytes) -> None:
        super().__init__(payload.decode("utf-8", "replace"))
        self.status = status
        self.payload = payload


# phases of a call, for what `close` may do with it
_QUEUED, _APPROVING, _INVOKING, _WAITING = range(4)


class _Call:
    """One tool call in flight."""

    __slots__ = (
        "attempts",
        "binding",
        "call_id",
        "ctx",
        "data",
        "decision",
        "kwargs",
        "lock",
        "phase",
        "recorded",
        "request",
        "started",
        "trace",
    )

    def __init__(
        self,
        call_id: int,
        binding: Binding,
        data: bytes,
        kwargs: dict[str, Any] | None,
        deadline: float,
    ) -> None:
        self.call_id = call_id
        self.binding = binding
        self.data = data
        self.kwargs = kwargs
        self.started = time.monotonic()
        self.decision = "allowed"
        self.attempts = 0
        self.ctx = CallContext(binding.name, deadline)
        self.request: ApprovalRequest | None = None
        self.phase = _QUEUED
        self.recorded = False
        self.lock = threading.Lock()
        self.trace: _telemetry.CallTrace | None = None

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    @property
    def args(self) -> dict[str, Any]:
        """The validated arguments (set by `Dispatcher._prepare` before the call runs)."""
        assert self.kwargs is not None
        return self.kwargs


#: what a call comes to: the status and payload of the guest's answer
Answer = tuple[int, bytes]


class Dispatcher:
    """The tool calls of one run (see the module doc). The guest callback `on_call`
    and the driver-side methods run on the run's thread; calls run elsewhere."""

    def __init__(
        self,
        setup: CallSetup,
        *,
        code: str,
        run_id: str,
        deadline: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.setup = setup
        self.code = code
        self.run_id = run_id
        self.deadline = deadline
        self.loop = loop
        #: answers ready for the guest: (call id, status, payload)
        self.ready: deque[tuple[int, int, bytes]] = deque()
        #: answers the guest through its inline buffer, if it can (0: it cannot)
        self.answer_now: Callable[[int, bytes], int] = lambda status, payload: 0
        self.calls_made = 0
        self._queued: deque[_Call] = deque()
        self._running: dict[cf.Future[Answer], _Call] = {}
        self._occurrences: dict[tuple[str, str], int] = {}
        self._code_sha256: str | None = None
        self._closed = False
        self._cap = setup.limits.max_concurrent_calls
        # host memory a script's calls may hold: bytes of arguments of calls not yet
        # answered (queued ones are kept as bytes), and of calls being worked on (parsed)
        self._pending_cap = 8 * setup.limits.max_result_bytes
        self._running_cap = 2 * setup.limits.max_result_bytes
        self._pending_bytes = 0
        self._running_bytes = 0
        #: the run's span and metrics (None when OpenTelemetry is not configured)
        self.trace: _telemetry.RunTrace | None = None

    @property
    def code_sha256(self) -> str:
        if self._code_sha256 is None:
            self._code_sha256 = digest(self.code)
        return self._code_sha256

    @property
    def closed(self) -> bool:
        """Whether the run is over for its calls."""
        return self._closed

    # -- the guest's side

    def on_call(self, call_id: int, tool: int, data: bytes) -> int:
        """A tool call from the guest. Refusals and invalid arguments are answered at
        once; a sync binding known to be fast runs right here; anything else is queued.
        Returns what the guest's `call` import returns (see `Guest.answer_now`)."""
        bindings = self.setup.bindings
        if tool >= len(bindings) and self.setup.discovery is not None:  # never refused/counted
            answer = self.setup.discovery.answer(tool - len(bindings), data)
            return self._deliver(call_id, answer, inline=True)
        b = bindings[tool] if 0 <= tool < len(bindings) else None
        if b is None:
            message = _wording.not_granted(f"#{tool}", [x.name for x in bindings])
            return self._refuse(call_id, None, data, Resolve.DENIED, message, "denied")
        policy = self.setup.policy
        refusal = policy.refusal(b, self.calls_made)
        self.calls_made += 1
        if refusal is None and time.monotonic() >= self.deadline:
            refusal = _wording.run_over(b.name)  # the script swallowed its deadline
        if refusal is not None:
            return self._refuse(call_id, b, data, Resolve.DENIED, refusal, "denied")
        if self._pending_bytes + len(data) > self._pending_cap:
            message = _wording.too_much_pending(self._pending_bytes, self._pending_cap)
            return self._refuse(call_id, b, data, Resolve.TOO_LARGE, message, "too_large")
        call = _Call(call_id, b, data, None, self.deadline)
        if self.trace is not None:
            call.trace = self.trace.call(b.name, b.description, call_id)
        if not b.is_async and not policy.needs_approval(b) and self.setup.is_fast(b):
            refused = self._prepare(call, inline=True)
            return refused if refused is not None else self._run_inline(call)
        # the arguments are parsed when the call starts: a queue of calls holds bytes,
        # within the run's budget, never their (larger) Python form
        self._pending_bytes += len(data)
        self._queued.append(call)
        return 0

    def _prepare(self, call: _Call, *, inline: bool) -> int | None:
        """Parse and check `call`'s arguments, and make its approval request if it needs
        one. Returns None, or the refusal's answer (`inline`: from inside the guest's
        call, so it may be answered at once)."""
        b = call.binding
        if call.kwargs is not None:  # a retry put back in the queue: already prepared
            return None
        try:
            call.kwargs = b.validate(_jsonsafe.loads(call.data.decode("utf-8", "surrogatepass")))
        except BindingArgumentError as exc:
            return self._refuse(
                call.call_id,
                b,
                call.data,
                Resolve.BAD_ARGS,
                str(exc),
                "invalid_args",
                inline=inline,
            )
        except (ValueError, RecursionError):
            message = f"invalid arguments for {_wording.tool_ref(b.name)}: not JSON data"
            return self._refuse(
                call.call_id,
                b,
                call.data,
                Resolve.BAD_ARGS,
                message,
                "invalid_args",
                inline=inline,
            )
        if self.setup.policy.needs_approval(b):
            if b.name in self.setup.approvals:
                call.decision = "approved_for_session"
            else:
                call.request = self._approval_request(call)
        return None

    def _refuse(
        self,
        call_id: int,
        b: Binding | None,
        data: bytes,
        status: Resolve,
        message: str,
        decision: str,
        *,
        inline: bool = True,
    ) -> int:
        self._audit(b.name if b else None, data, decision, decision, 0.0, 0)
        call = _wording.call_text(b.name, data) if b is not None else ""
        return self._deliver(call_id, (status, _payload(call, message)), inline=inline)

    def _approval_request(self, call: _Call) -> ApprovalRequest:
        b = call.binding
        args_sha256 = canonical_digest(call.args)
        key = (b.name, args_sha256)
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1
        request_id = digest(f"{b.name}\0{args_sha256}\0{self.code_sha256}\0{occurrence}")
        return ApprovalRequest(
            binding=b.name,
            description=b.description,
            effects=b.effects,
            args=dict(call.args),
            code_sha256=self.code_sha256,
            args_sha256=args_sha256,
            occurrence=occurrence,
            request_id=request_id[:32],
        )

    def _run_inline(self, call: _Call) -> int:
        b = call.binding
        call.phase = _INVOKING
        call.attempts = 1
        t0 = time.perf_counter()
        token = enter_call(call.ctx)
        try:
            value = _telemetry.call_context(call.trace).run(b.func, **call.args)
        except TransientError:
            self.setup.timing.pop(b.name, None)  # retries belong on the pool
            call.attempts = 0
            call.phase = _QUEUED
            self._pending_bytes += len(call.data)
            self._queued.append(call)
            return 0
        except Exception as exc:  # noqa: BLE001 - the script sees only the message
            self.setup.note_duration(b, time.perf_counter() - t0)
            return self._deliver(call.call_id, self._conclude(call, exc, None), inline=True)
        finally:
            leave_call(token)
        self.setup.note_duration(b, time.perf_counter() - t0)
        return self._deliver(call.call_id, self._conclude(call, None, value), inline=True)

    def _deliver(self, call_id: int, answer: Answer, *, inline: bool) -> int:
        status, payload = answer
        if inline:
            answered = self.answer_now(status, payload)
            if answered:
                return answered
        self.ready.append((call_id, status, payload))
        return 0

    # -- the driver's side

    @property
    def busy(self) -> bool:
        """Calls are running or waiting for a slot."""
        return bool(self._running or self._queued)

    def start_queued(self) -> None:
        """Start queued calls, as many as the concurrency cap and the bytes of arguments
        being worked on allow (a call whose arguments are refused is answered)."""
        while self._queued and len(self._running) < self._cap and not self._closed:
            call = self._queued[0]
            size = len(call.data)
            if self._running and self._running_bytes + size > self._running_cap:
                return  # wait for a running call: their parsed arguments are bounded too
            self._queued.popleft()
            if self._prepare(call, inline=False) is not None:
                self._pending_bytes -= size
                continue
            self._running_bytes += size
            fut: cf.Future[Answer]
            # the call runs in a copy of the run's context, its span current
            context = _telemetry.call_context(call.trace)
            if call.binding.is_async:
                import asyncio

                loop = self.loop or background_loop()
                coro = self._call_async(call)
                fut = context.run(asyncio.run_coroutine_threadsafe, coro, loop)
            else:
                fut = call_pool().submit(context.run, self._call_sync, call)
            self._running[fut] = call

    def wait(self, timeout: float, *, wake: cf.Future[None] | None = None) -> bool:
        """Wait up to `timeout` s for a running call to finish (or `wake` to be set);
        put the answers of the finished ones in `ready`. Returns whether any finished."""
        if not self._running:
            return False
        waiting: list[cf.Future[Any]] = list(self._running)
        if wake is not None:
            waiting.append(wake)
        done, _ = cf.wait(waiting, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        done.discard(wake)
        self._collect(done)
        return bool(done)

    def collect_done(self) -> None:
        """Put the answers of the calls that have finished in `ready` (no waiting)."""
        self._collect([fut for fut in self._running if fut.done()])

    def _collect(self, done: Iterable[cf.Future[Any]]) -> None:
        for fut in done:
            call = self._running.pop(fut)
            self._pending_bytes -= len(call.data)
            self._running_bytes -= len(call.data)
            try:
                answer = fut.result()
            except BaseException:  # noqa: BLE001 - a cancelled task: nothing to deliver
                continue
            self._deliver(call.call_id, answer, inline=False)

    def close(self, outcome: str) -> None:
        """End the run's calls (the run is over; `outcome` is ``abandoned`` or
        ``cancelled``): nothing may start, retry or be approved from now on."""
        self._closed = True
        for call in self._queued:
            self._record(call, "abandoned")
        self._queued.clear()
        for fut, call in self._running.items():
            call.ctx.cancel()
            with call.lock:
                if fut.done() or call.recorded:
                    continue
                cancelled = fut.cancel()
                if call.binding.is_async:
                    self._record_locked(call, outcome if call.phase != _QUEUED else "abandoned")
                elif cancelled:
                    self._record_locked(call, "abandoned")  # never left the pool's queue
                elif call.phase == _INVOKING:
                    # inside its function: it finishes on its own and records itself then
                    self._audit(
                        call.binding.name,
                        call.data,
                        call.decision,
                        "running",
                        call.elapsed_ms(),
                        call.attempts,
                        event="call_running",
                    )
        self._running.clear()

    # -- where calls run (pool thread or event loop)

    def _enter(self, call: _Call, phase: int) -> None:
        """Move `call` to `phase`, or record and stop it if its run is over (a call
        that was waiting for its approval then counts as ``expired``)."""
        with call.lock:
            if self._closed or call.ctx.cancelled:
                self._record_locked(call, "expired" if call.phase == _APPROVING else "abandoned")
                raise _Stop(
                    Resolve.DENIED, _call_payload(call, _wording.run_over(call.binding.name))
                )
            call.phase = phase

    def _decide(self, call: _Call, answer: Any) -> None:
        """Apply an approver's answer; stop the call unless it is a yes."""
        _telemetry.answered(call.trace)
        if answer is True or answer == Approval.ALLOW_ONCE:
            call.decision = "approved"
        elif answer == Approval.ALLOW_SESSION:
            call.decision = "approved_for_session"
        else:
            call.decision = "approval_denied"
        self._enter(call, _APPROVING)  # an answer after the run ended: expired
        if call.decision == "approval_denied":
            self._stop(call, _wording.not_approved(call.binding.name))
        if call.decision == "approved_for_session":
            self.setup.approvals.add(call.binding.name)

    def _stop(self, call: _Call, message: str) -> None:
        self._record(call, "denied")
        raise _Stop(Resolve.DENIED, _call_payload(call, message))

    def _approver_failed(self, call: _Call, exc: BaseException) -> None:
        _telemetry.answered(call.trace)
        import logging

        logging.getLogger("clambot_tools").warning(
            "the approver failed, so tools.%s is denied: %s", call.binding.name, exc
        )
        call.decision = "approval_failed"
        self._enter(call, _APPROVING)
        self._stop(call, _wording.approver_failed(call.binding.name))

    def _retrying(self) -> dict[str, Any]:
        import tenacity

        policy = self.setup.policy
        return {
            "stop": tenacity.stop_any(
                tenacity.stop_after_attempt(policy.retry_attempts),
                tenacity.stop_after_delay(max(0.0, self.deadline - time.monotonic())),
                _stop_when_closed(self),
            ),
            "wait": tenacity.wait_exponential(
                multiplier=policy.retry_backoff_s, max=policy.retry_max_backoff_s
            ),
            "retry": tenacity.retry_if_exception_type(TransientError),
            "reraise": True,
        }

    def _call_sync(self, call: _Call) -> Answer:
        """Run a call on a pool thread: approval, attempts, its answer and record."""
        try:
            self._enter(call, _APPROVING if call.request is not None else _QUEUED)
            if call.request is not None:
                self._decide(call, self._ask_sync(call, call.request))
            value = self._attempts_sync(call)
        except _Stop as stop:
            return stop.status, stop.payload
        except BaseException as exc:  # noqa: BLE001 - becomes the script's error
            return self._conclude(call, exc, None)
        return self._conclude(call, None, value)

    def halt(self) -> None:
        """From any thread: no call may start, be approved or retry from now on (the
        run is being cancelled; `close` follows on the run's thread)."""
        self._closed = True
        for call in list(self._running.values()):
            call.ctx.cancel()

    def _ask_sync(self, call: _Call, request: ApprovalRequest) -> Any:
        _telemetry.asking(call.trace)
        approve = self.setup.policy.approve
        assert approve is not None
        try:
            answer = approve(request)
            if inspect.isawaitable(answer):
                import asyncio

                loop = self.loop or background_loop()
                pending = asyncio.run_coroutine_threadsafe(_await(answer), loop)
                try:
                    answer = pending.result(timeout=max(0.0, self.deadline - time.monotonic()))
                except cf.TimeoutError:
                    pending.cancel()
                    self._enter(call, _APPROVING)  # past the deadline: expired
                    raise TimeoutError("no answer before the deadline") from None
        except _Stop:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing approver denies
            self._approver_failed(call, exc)
        return answer

    def _attempts_sync(self, call: _Call) -> Any:
        import tenacity

        token = enter_call(call.ctx)
        try:
            for attempt in tenacity.Retrying(**self._retrying()):
                with attempt:
                    self._enter(call, _INVOKING)
                    call.attempts += 1
                    t0 = time.perf_counter()
                    try:
                        return call.binding.func(**call.args)
                    finally:
                        self.setup.note_duration(call.binding, time.perf_counter() - t0)
                        with call.lock:
                            call.phase = _WAITING
        finally:
            leave_call(token)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _call_async(self, call: _Call) -> Answer:
        """Run a call as a task on an event loop: approval, attempts, answer, record."""
        import asyncio

        import tenacity

        try:
            self._enter(call, _APPROVING if call.request is not None else _QUEUED)
            if call.request is not None:
                self._decide(call, await self._ask_async(call, call.request))
            enter_call(call.ctx)  # this task's own context: nothing to reset
            async for attempt in tenacity.AsyncRetrying(**self._retrying()):
                with attempt:
                    self._enter(call, _INVOKING)
                    call.attempts += 1
                    try:
                        value = await call.binding.func(**call.args)
                    finally:
                        with call.lock:
                            call.phase = _WAITING
        except _Stop as stop:
            return stop.status, stop.payload
        except asyncio.CancelledError:
            self._record(call, "cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - becomes the script's error
            return self._conclude(call, exc, None)
        return self._conclude(call, None, value)

    async def _ask_async(self, call: _Call, request: ApprovalRequest) -> Any:
        import asyncio

        _telemetry.asking(call.trace)
        approve = self.setup.policy.approve
        assert approve is not None
        try:
            if inspect.iscoroutinefunction(approve):
                return await approve(request)
            loop = asyncio.get_running_loop()
            context = contextvars.copy_context()
            answer = await loop.run_in_executor(call_pool(), context.run, approve, request)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer
        except (_Stop, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing approver denies
            self._approver_failed(call, exc)
            raise AssertionError("unreachable") from None  # pragma: no cover

    def _conclude(self, call: _Call, exc: BaseException | None, value: Any) -> Answer:
        """The answer for a call whose function returned `value` or raised `exc`; its
        record says what happened (and whether its run had ended by then)."""
        b = call.binding
        limits = self.setup.limits
        if exc is not None:
            answer = _failed(call, _exception_text(exc))
            outcome = "failed"
        else:
            try:
                payload = to_json_bytes(value)
            except (TypeError, ValueError, RecursionError) as err:
                answer, outcome = _failed(call, _wording.result_not_json(err)), "failed"
            else:
                if len(payload) > limits.max_result_bytes:
                    reason = _wording.result_too_large(len(payload), limits)
                    answer = (Resolve.TOO_LARGE, _call_payload(call, reason))
                    outcome = "too_large"
                else:
                    answer, outcome = (Resolve.OK, payload), "ok"
                    if self.setup.shapes is not None:
                        self.setup.shapes.observe(b.name, payload)
        with call.lock:
            if not call.recorded:
                call.recorded = True
                self._audit(
                    b.name,
                    call.data,
                    call.decision,
                    outcome,
                    call.elapsed_ms(),
                    call.attempts,
                    after_run=self._closed,
                    trace=call.trace,
                )
        return answer

    # -- audit

    def _record(self, call: _Call, outcome: str) -> None:
        with call.lock:
            self._record_locked(call, outcome)

    def _record_locked(self, call: _Call, outcome: str) -> None:
        if call.recorded:
            return
        call.recorded = True
        self._audit(
            call.binding.name,
            call.data,
            call.decision,
            outcome,
            call.elapsed_ms(),
            call.attempts,
            trace=call.trace,
        )

    def _audit(
        self,
        name: str | None,
        data: bytes,
        decision: str,
        outcome: str,
        duration_ms: float,
        attempts: int,
        *,
        event: str = "call",
        after_run: bool = False,
        trace: _telemetry.CallTrace | None = None,
    ) -> None:
        if self.trace is not None and event == "call":  # the call's span ends with its record
            self.trace.call_done(trace, name, decision, outcome, duration_ms, attempts, after_run)
        audit = self.setup.audit
        if audit is None:
            return
        record: dict[str, Any] = {
            "event": event,
            "run_id": self.run_id,
            "code_sha256": self.code_sha256,
            "binding": name,
            "args_sha256": digest(data),
            "decision": decision,
            "outcome": outcome,
            "duration_ms": round(duration_ms, 3),
            "attempts": attempts,
        }
        if after_run:
            record["after_run"] = True
        if audit.include_args:
            record["args"] = data.decode("utf-8", "replace")
        audit.emit(record)


def _stop_when_closed(calls: Dispatcher) -> Any:
    """A tenacity stop condition: no retry once the run is over."""
    import tenacity

    class StopWhenClosed(tenacity.stop.stop_base):
        def __call__(self, retry_state: Any) -> bool:
            return calls.closed

    return StopWhenClosed()


def _payload(call_text: str, message: str) -> bytes:
    """An error answer for the guest: the call's text, NUL, the message."""
    return (call_text + "\0" + message).encode("utf-8", "surrogatepass")


def _call_payload(call: _Call, message: str) -> bytes:
    return _payload(_wording.call_text(call.binding.name, call.data), message)


def _failed(call: _Call, message: str) -> Answer:
    return Resolve.FAILED, _call_payload(call, message)


async def _await(x: Any) -> Any:
    return await x


def _exception_text(exc: BaseException) -> str:
    """What the script sees of a binding's exception: its message only."""
    try:
        return str(exc).strip() or "the tool failed"
    except Exception:  # noqa: BLE001 - a __str__ that raises
        return "the tool failed"
