"""What `clambot` writes to the operator's terminal, and how it asks for approval.

Every line goes through `Output`: text made visible (``_text.visible``: no escape
sequence, control or bidi character reaches the terminal) and encoded whatever the
stream's encoding (characters it cannot hold become escapes); JSON through
``_text.json_text``, valid and parseable in any encoding.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, TextIO

from .._policy import Approval, ApprovalRequest
from .._text import json_text, visible

#: arguments of a call longer than this (as indented JSON) are not shown for approval:
#: nobody can review them on a terminal, so the call is refused instead
MAX_PROMPT_ARGS_CHARS = 20_000


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or not a real stream
        return False


class Output:
    """One output stream (stdout or stderr) of the command."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.stream)

    def text(self, text: str) -> None:
        """Write `text` (with its newlines), every control character made visible."""
        self._write(visible(text))

    def line(self, text: str = "") -> None:
        self.text(text + "\n")

    def json(self, value: Any) -> int:
        """Write `value` as indented JSON and a newline; returns how many lone surrogates
        were written as U+FFFD."""
        text, replaced = json_text(value)
        try:
            self.stream.write(text + "\n")
        except UnicodeEncodeError:  # e.g. an ASCII-only terminal: escape the rest
            self.stream.write(json_text(value, ascii_only=True)[0] + "\n")
        return replaced

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except UnicodeEncodeError:
            enc = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(text.encode(enc, "backslashreplace").decode(enc, "replace"))

    def flush(self) -> None:
        self.stream.flush()


class TerminalApprover:
    """Asks the operator, on the terminal, before a call that needs approval.

    The question shows the binding, its effects and the call's full arguments (a call
    whose arguments are too long to review is refused). Only one question is asked at a
    time. An answer counts only while the run can still use it: when the run's time
    limit passes or the run has returned (`close`), the waiting question is refused at
    once, so nothing the operator types afterwards can let a call run.
    """

    def __init__(self, stdin: TextIO, err: Output) -> None:
        self._stdin = stdin
        self._err = err
        self._cond = threading.Condition()
        self._lines: deque[str] = deque()
        self._wanted = 0
        self._eof = False
        self._closed = False
        self._reader: threading.Thread | None = None
        self._ask = threading.Lock()
        self._deadline = float("inf")

    def start(self, timeout_s: float) -> None:
        """A run begins: questions may be answered for `timeout_s` seconds from now."""
        self._deadline = time.monotonic() + timeout_s

    def close(self) -> None:
        """The run has returned: refuse the question waiting, and every later one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __call__(self, req: ApprovalRequest) -> Approval:
        with self._ask:
            if self._closed or time.monotonic() >= self._deadline:
                return Approval.DENY
            args, _ = json_text(dict(req.args))
            where = f"tools.{req.binding} ({', '.join(req.effects)})"
            if len(args) > MAX_PROMPT_ARGS_CHARS:
                self._err.line(
                    f"\nThe script wants to call {where} with arguments of {len(args):,} "
                    "characters, too long to review here: refused."
                )
                return Approval.DENY
            self._err.text(
                f"\nThe script wants to call {where} with:\n{args}\n"
                "Allow? [y]es once / [a]lways this session / [N]o: "
            )
            self._err.flush()
            answer = self._next_line()
            if answer is None:
                why = "the run is over" if self._closed else "no answer"
                self._err.line(f"\n({why}: not allowed)")
                return Approval.DENY
            answer = answer.strip().lower()
            if answer in ("y", "yes"):
                return Approval.ALLOW_ONCE
            if answer in ("a", "always"):
                return Approval.ALLOW_SESSION
            return Approval.DENY

    def _next_line(self) -> str | None:
        """The operator's next line, or None at end of input, at the run's deadline or
        when the run is over (the line is then never used)."""
        with self._cond:
            if not self._lines:
                self._wanted += 1
            if self._reader is None:
                self._reader = threading.Thread(
                    target=self._read, name="clambot-approval-input", daemon=True
                )
                self._reader.start()
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: bool(self._lines) or self._eof or self._closed,
                timeout=max(0.0, self._deadline - time.monotonic()),
            )
            if self._closed or not self._lines:
                return None
            return self._lines.popleft()

    def _read(self) -> None:
        # A daemon thread: a question refused at the deadline leaves it waiting on the
        # terminal, and the process must still exit when the run is done.
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted > 0 or self._closed)
                if self._closed:
                    return
            try:
                line = self._stdin.readline()
            except (OSError, ValueError, UnicodeDecodeError):
                line = ""
            with self._cond:
                if not line:
                    self._eof = True
                else:
                    self._lines.append(line)
                    self._wanted -= 1
                self._cond.notify_all()
                if self._eof:
                    return
