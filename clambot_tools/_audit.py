"""The audit log: one structured record per run and per tool call.

Records are dicts, written as JSON lines to a file, passed to a `logging.Logger`, or
given to any callable. They hold hashes, names, decisions, outcomes and durations:
never the script's source, the tools' results or error messages (which may carry
secrets), and the arguments only as a sha256 digest unless ``include_args=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # logging costs ~5 ms to import; a user who passes a Logger has it
    import logging

AuditSink = Union[str, "os.PathLike[str]", "logging.Logger", Callable[[dict[str, Any]], None]]


def digest(data: bytes | str) -> str:
    """sha256 hex digest of `data` (str is encoded as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def canonical_digest(value: Any) -> str:
    """sha256 hex digest of `value` as canonical JSON (sorted keys, no spaces); values
    JSON cannot hold are written as their str()."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return digest(text)


class AuditLog:
    """Writes audit records to one sink. Thread-safe; a failing sink never fails a run.

    Args:
        sink: a path (JSON lines, appended, created with mode 0600), a `logging.Logger`
            (records go out at INFO as JSON with the dict in ``extra["audit"]``), or a
            callable receiving each record.
        include_args: put the JSON arguments of each call in its record, not just
            their digest. Off by default: arguments may hold personal data.
    """

    def __init__(self, sink: AuditSink, *, include_args: bool = False) -> None:
        self.include_args = include_args
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._logger: logging.Logger | None = None
        self._func: Callable[[dict[str, Any]], None] | None = None
        logging_mod = sys.modules.get("logging")
        if logging_mod is not None and isinstance(sink, logging_mod.Logger):
            self._logger = sink
        elif isinstance(sink, (str, os.PathLike)):
            self._path = Path(sink)
        elif callable(sink):
            self._func = sink
        else:
            from ._errors import ConfigError

            raise ConfigError("audit sink must be a path, a logging.Logger or a callable")

    def emit(self, record: dict[str, Any]) -> None:
        """Write one record (a ``time`` field is added)."""
        record = {"time": round(time.time(), 6), **record}
        try:
            if self._func is not None:
                self._func(record)
            elif self._logger is not None:
                self._logger.info(json.dumps(record, sort_keys=True), extra={"audit": record})
            elif self._path is not None:
                line = json.dumps(record, sort_keys=True) + "\n"
                with self._lock:
                    fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    try:
                        os.write(fd, line.encode())
                    finally:
                        os.close(fd)
        except Exception:
            import logging

            logging.getLogger("clambot_tools").exception("audit sink failed")
