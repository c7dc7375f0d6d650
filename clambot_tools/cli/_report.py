"""`clambot report`: what an audit log says about a rollout, and whether it holds.

The log is read line by line (never whole): each run's duration and memory are kept
(16 bytes a run) for exact percentiles, everything else is counted. Values this code
does not know (a new run outcome such as ``cancelled``, a new decision such as
``approval_failed``, another event) are counted under their own name; a line that is not
a record (not JSON, not an object, no valid ``time``, a run without outcome or duration)
is counted as damaged with its line number, never fatal.

Percentiles are nearest-rank: p95 of n runs is the ceil(0.95 n)-th smallest duration.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._errors import ConfigError

#: a line longer than this (in characters) is damaged, and skipped without being held whole
MAX_LINE_CHARS = 16 << 20
#: line numbers of damaged lines kept to show
MAX_DAMAGED_SHOWN = 10
#: upper edges (ms) of the latency histogram's buckets; the last bucket is unbounded
HISTOGRAM_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000)
#: decisions that mean a human (or an approver) allowed the call
APPROVAL_GRANTED = ("approved", "approved_for_session")
_DAY_S = 86_400
_MAX_TIME = 1e11  # year 5138: a larger "time" is not a timestamp


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """What a canary is held to (``[rollout]`` in sandbox.toml).

    Attributes:
        max_error_rate: most share of runs that may end in an error (0.02: 2%).
        min_runs: runs needed before anything is judged; fewer pass as not judged yet.
        max_p95_ms: the p95 run duration may not exceed this.

    Raises ConfigError for a value out of range.
    """

    max_error_rate: float = 0.02
    min_runs: int = 100
    max_p95_ms: float = 2000.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(
                f"rollout.max_error_rate must be in [0, 1], got {self.max_error_rate}"
            )
        if self.min_runs < 0:
            raise ConfigError(f"rollout.min_runs must be >= 0, got {self.min_runs}")
        if not self.max_p95_ms > 0:
            raise ConfigError(f"rollout.max_p95_ms must be > 0, got {self.max_p95_ms}")


@dataclass
class BindingCounts:
    """The calls of one binding."""

    calls: int = 0
    denied: int = 0
    failed: int = 0
    by_decision: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)


@dataclass
class Day:
    """One UTC day of the log."""

    records: int = 0
    bytes: int = 0
    runs: int = 0
    calls: int = 0


@dataclass
class Report:
    """The figures of one audit log (see `read_audit`)."""

    source: str
    since: float | None
    records: int = 0
    damaged: int = 0
    damaged_lines: list[int] = field(default_factory=list)
    damaged_reasons: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    durations_ms: list[float] = field(default_factory=list)  # sorted
    memory_bytes: list[float] = field(default_factory=list)  # sorted
    bindings: dict[str, BindingCounts] = field(default_factory=dict)
    other_events: dict[str, int] = field(default_factory=dict)
    days: dict[int, Day] = field(default_factory=dict)
    first_time: float | None = None
    last_time: float | None = None

    @property
    def runs(self) -> int:
        return len(self.durations_ms)

    @property
    def ok_runs(self) -> int:
        return self.outcomes.get("ok", 0)

    @property
    def errors_by_kind(self) -> dict[str, int]:
        """Runs by outcome other than ``ok``, most frequent first."""
        errs = {k: v for k, v in self.outcomes.items() if k != "ok"}
        return dict(sorted(errs.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def error_rate(self) -> float | None:
        return None if not self.runs else (self.runs - self.ok_runs) / self.runs

    @property
    def calls(self) -> int:
        return sum(b.calls for b in self.bindings.values())

    def latency_ms(self, q: float) -> float | None:
        """The nearest-rank `q` quantile (0 < q <= 1) of run durations."""
        return _rank(self.durations_ms, q)

    def memory_p95(self) -> float | None:
        return _rank(self.memory_bytes, 0.95)

    def approvals(self) -> tuple[int, int, dict[str, int]]:
        """(granted, refused, count by decision) of the calls that asked for approval:
        decisions ``approved``/``approved_for_session`` and any ``approval_*``."""
        by: dict[str, int] = {}
        for b in self.bindings.values():
            for d, n in b.by_decision.items():
                if d in APPROVAL_GRANTED or d.startswith("approval"):
                    by[d] = by.get(d, 0) + n
        granted = sum(n for d, n in by.items() if d in APPROVAL_GRANTED)
        return granted, sum(by.values()) - granted, dict(sorted(by.items()))

    def histogram(self) -> list[tuple[float | None, int]]:
        """(upper edge in ms or None for the rest, runs) for every bucket."""
        out: list[tuple[float | None, int]] = []
        below = 0
        for edge in HISTOGRAM_EDGES_MS:
            upto = bisect.bisect_right(self.durations_ms, edge)
            out.append((edge, upto - below))
            below = upto
        out.append((None, self.runs - below))
        return out


def _rank(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def parse_since(text: str, now: float | None = None) -> float:
    """A --since value as epoch seconds: a duration back from now (``30m``, ``24h``,
    ``7d``, ``2w``) or an ISO date or date-time (UTC unless it carries an offset).

    Raises ConfigError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": _DAY_S, "w": 7 * _DAY_S}[m.group(2)]
        return (time.time() if now is None else now) - float(m.group(1)) * unit
    iso = text.strip()
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give a duration (30m, 24h, 7d, 2w) or an ISO date "
            "(2025-01-31, 2025-01-31T12:00, 2025-01-31T12:00+02:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def read_audit(
    path: str | os.PathLike[str], *, since: float | None = None, max_line: int = MAX_LINE_CHARS
) -> Report:
    """Read an audit log (JSON lines, as `AuditLog` writes them), streaming.

    Records before `since` (epoch seconds) are skipped. Raises OSError if the file
    cannot be opened or read; damaged lines are counted, never raised.
    """
    reader = _Reader(Report(source=os.fspath(path), since=since))
    # Bytes that are not UTF-8 become lone surrogates (shown as U+FFFD), never an error.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        for line in reader.lines(f, max_line):
            rec = reader.parse(line)
            if rec is not None:
                reader.count(rec, line)
    return reader.finish()


class _Damaged(Exception):
    """A line that is not a record; its argument says why."""


class _Reader:
    """Counts one log's records into a Report (the hot path of `read_audit`)."""

    def __init__(self, rep: Report) -> None:
        self.rep = rep
        self.lineno = 0
        self.durations = array("d")
        self.memory = array("d")
        self.first = math.inf
        self.last = -math.inf
        self.days = rep.days
        # the C scanner json.loads ends in, called directly: a third faster on a large log
        self.scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def damage(self, why: str) -> None:
        rep = self.rep
        rep.damaged += 1
        rep.damaged_reasons[why] = rep.damaged_reasons.get(why, 0) + 1
        if len(rep.damaged_lines) < MAX_DAMAGED_SHOWN:
            rep.damaged_lines.append(self.lineno)

    def lines(self, f: Any, max_line: int) -> Iterator[str]:
        """The file's lines but blank ones; a line over `max_line` characters is
        damaged and skipped a piece at a time, never held whole."""
        readline = f.readline
        while line := readline(max_line):
            self.lineno += 1
            if len(line) >= max_line and line[-1:] != "\n":
                while (rest := readline(max_line)) and rest[-1:] != "\n":
                    pass
                self.damage("too long")
            elif not line.isspace():
                yield line

    def parse(self, line: str) -> dict[str, Any] | None:
        """The line's record, or None (counted as damaged) if it is not one."""
        try:
            try:
                rec, end = self.scan(line, 0)
            except StopIteration:  # leading whitespace, or not JSON at all
                line = line.lstrip()
                rec, end = self.scan(line, 0)
        except (StopIteration, ValueError, RecursionError):
            self.damage("not JSON")
            return None
        if end < len(line) and not line[end:].isspace():
            self.damage("not JSON")
        elif type(rec) is not dict:
            self.damage("not an object")
        else:
            return rec
        return None

    def count(self, rec: dict[str, Any], line: str) -> None:
        t = rec.get("time")
        if (type(t) is not float and type(t) is not int) or not 0 <= t < _MAX_TIME:
            self.damage("no valid time")
            return
        rep = self.rep
        if rep.since is not None and t < rep.since:
            return
        ev = rec.get("event")
        try:
            if ev == "call":
                self.call(rec)
            elif ev == "run":
                self.run(rec)
            else:
                key = ev if type(ev) is str else json.dumps(ev)
                rep.other_events[key] = rep.other_events.get(key, 0) + 1
        except _Damaged as exc:
            self.damage(exc.args[0])
            return
        rep.records += 1
        if t < self.first:
            self.first = t
        if t > self.last:
            self.last = t
        dn = int(t // _DAY_S)
        day = self.days.get(dn)
        if day is None:
            day = self.days[dn] = Day()
        day.records += 1
        day.bytes += len(line) if line.isascii() else len(line.encode("utf-8", "surrogateescape"))
        if ev == "run":
            day.runs += 1
        elif ev == "call":
            day.calls += 1

    def call(self, rec: dict[str, Any]) -> None:
        decision = rec.get("decision")
        outcome = rec.get("outcome")
        if type(decision) is not str or type(outcome) is not str:
            raise _Damaged("call without decision or outcome")
        name = rec.get("binding")
        key = name if type(name) is str else "(unknown)" if name is None else str(name)
        bc = self.rep.bindings.get(key)
        if bc is None:
            bc = self.rep.bindings[key] = BindingCounts()
        bc.calls += 1
        bc.by_decision[decision] = bc.by_decision.get(decision, 0) + 1
        bc.by_outcome[outcome] = bc.by_outcome.get(outcome, 0) + 1
        if outcome == "denied":
            bc.denied += 1
        elif outcome != "ok":
            bc.failed += 1

    def run(self, rec: dict[str, Any]) -> None:
        outcome = rec.get("outcome")
        d = rec.get("duration_ms")
        if (
            type(outcome) is not str
            or (type(d) is not float and type(d) is not int)
            or not 0 <= d < math.inf
        ):
            raise _Damaged("run without outcome or duration")
        outcomes = self.rep.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.durations.append(d)
        mem = rec.get("memory_bytes")
        if (type(mem) is float or type(mem) is int) and 0 <= mem < math.inf:
            self.memory.append(mem)

    def finish(self) -> Report:
        rep = self.rep
        if rep.records:
            rep.first_time, rep.last_time = self.first, self.last
        rep.durations_ms = sorted(self.durations)
        rep.memory_bytes = sorted(self.memory)
        return rep


# -- judging


@dataclass(frozen=True)
class CheckResult:
    """What `check` found: `failures` (thresholds crossed) and whether it judged at all."""

    judged: bool
    failures: tuple[str, ...]
    note: str

    @property
    def passed(self) -> bool:
        return not self.failures


def check(rep: Report, th: Thresholds) -> CheckResult:
    """Hold a report to thresholds: error rate and p95 are judged once there are
    ``min_runs`` runs; before that nothing fails (the note says so)."""
    if rep.runs < th.min_runs or rep.runs == 0:
        return CheckResult(
            False, (), f"{rep.runs:,} runs, fewer than min_runs = {th.min_runs:,}: not judged yet"
        )
    failures = []
    rate = rep.error_rate or 0.0
    if rate > th.max_error_rate:
        failures.append(f"error rate {rate:.2%} is above max_error_rate {th.max_error_rate:.2%}")
    p95 = rep.latency_ms(0.95) or 0.0
    if p95 > th.max_p95_ms:
        failures.append(f"p95 {_ms(p95)} is above max_p95_ms {_ms(th.max_p95_ms)}")
    note = (
        f"{rep.runs:,} runs; error rate {rate:.2%} (max {th.max_error_rate:.2%}), "
        f"p95 {_ms(p95)} (max {_ms(th.max_p95_ms)})"
    )
    return CheckResult(True, tuple(failures), note)


# -- output


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _day(dn: int) -> str:
    return datetime.fromtimestamp(dn * _DAY_S, timezone.utc).date().isoformat()


def to_json(rep: Report, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The report as a JSON object (``--json``); ``check`` is present when judged
    against `thresholds`."""
    granted, refused, by_decision = rep.approvals()
    out: dict[str, Any] = {
        "source": rep.source,
        "since": _iso(rep.since),
        "first_time": _iso(rep.first_time),
        "last_time": _iso(rep.last_time),
        "records": rep.records,
        "damaged": {
            "count": rep.damaged,
            "first_lines": rep.damaged_lines,
            "reasons": rep.damaged_reasons,
        },
        "runs": rep.runs,
        "ok": rep.ok_runs,
        "success_rate": None if not rep.runs else rep.ok_runs / rep.runs,
        "error_rate": rep.error_rate,
        "errors_by_kind": rep.errors_by_kind,
        "p50_ms": rep.latency_ms(0.50),
        "p95_ms": rep.latency_ms(0.95),
        "p99_ms": rep.latency_ms(0.99),
        "max_ms": rep.durations_ms[-1] if rep.durations_ms else None,
        "memory_p95_bytes": rep.memory_p95(),
        "latency_histogram": [{"up_to_ms": e, "runs": n} for e, n in rep.histogram()],
        "calls": rep.calls,
        "bindings": {
            name: {
                "calls": b.calls,
                "denied": b.denied,
                "failed": b.failed,
                "by_decision": dict(sorted(b.by_decision.items())),
                "by_outcome": dict(sorted(b.by_outcome.items())),
            }
            for name, b in sorted(rep.bindings.items())
        },
        "approvals": {"granted": granted, "refused": refused, "by_decision": by_decision},
        "other_events": dict(sorted(rep.other_events.items())),
        "per_day": [
            {
                "day": _day(dn),
                "records": d.records,
                "bytes": d.bytes,
                "runs": d.runs,
                "calls": d.calls,
            }
            for dn, d in sorted(rep.days.items())
        ],
    }
    if thresholds is not None:
        res = check(rep, thresholds)
        out["check"] = {
            "passed": res.passed,
            "judged": res.judged,
            "failures": list(res.failures),
            "note": res.note,
            "thresholds": {
                "max_error_rate": thresholds.max_error_rate,
                "min_runs": thresholds.min_runs,
                "max_p95_ms": thresholds.max_p95_ms,
            },
        }
    return out


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _table(headers: list[str], rows: list[list[str]], *, left: tuple[int, ...] = (0,)) -> list[str]:
    """Rows under headers; the columns in `left` left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  " + "  ".join(cells).rstrip()

    return [fmt(headers), *(fmt(r) for r in rows)]


def render_text(rep: Report, thresholds: Thresholds | None = None, *, width: int = 40) -> str:
    """The report for a terminal: summary, errors, latency histogram, bindings,
    approvals, volume per day, and the check when `thresholds` are given."""
    lines: list[str] = []
    span = (
        f"{_iso(rep.first_time)} to {_iso(rep.last_time)}"
        if rep.first_time is not None
        else "no records"
    )
    since = f" (since {_iso(rep.since)})" if rep.since is not None else ""
    lines.append(f"{rep.source}: {rep.records:,} records, {span}{since}")
    if rep.damaged:
        shown = ", ".join(str(n) for n in rep.damaged_lines)
        more = ", ..." if rep.damaged > len(rep.damaged_lines) else ""
        why = ", ".join(f"{k} {v:,}" for k, v in sorted(rep.damaged_reasons.items()))
        lines.append(f"damaged lines: {rep.damaged:,} (line {shown}{more}; {why})")
    lines.append("")
    runs = rep.runs
    lines += _table(
        ["runs", "success", "errors", "p50", "p95", "p99", "max", "memory p95"],
        [
            [
                f"{runs:,}",
                _pct(rep.ok_runs, runs),
                _pct(runs - rep.ok_runs, runs),
                _ms(rep.latency_ms(0.5)),
                _ms(rep.latency_ms(0.95)),
                _ms(rep.latency_ms(0.99)),
                _ms(rep.durations_ms[-1] if runs else None),
                _size(rep.memory_p95()),
            ]
        ],
    )
    if rep.errors_by_kind:
        lines += ["", "errors by kind"]
        lines += _table(
            ["kind", "runs", "share"],
            [[k, f"{n:,}", _pct(n, runs)] for k, n in rep.errors_by_kind.items()],
        )
    if runs:
        lines += ["", "latency (runs)"]
        hist = rep.histogram()
        used = [i for i, (_, n) in enumerate(hist) if n]
        peak = max(n for _, n in hist)
        rows = []
        for edge, n in hist[used[0] : used[-1] + 1]:
            label = f"<= {_ms(edge)}" if edge is not None else f"> {_ms(HISTOGRAM_EDGES_MS[-1])}"
            bar = "#" * (math.ceil(n * width / peak) if n else 0)
            rows.append([label, f"{n:,}", bar])
        lines += _table(["duration", "runs", ""], rows, left=(0, 2))
    if rep.bindings:
        lines += ["", "tool calls"]
        rows = [
            [name, f"{b.calls:,}", f"{b.denied:,}", f"{b.failed:,}"]
            for name, b in sorted(rep.bindings.items(), key=lambda kv: (-kv[1].calls, kv[0]))
        ]
        lines += _table(["binding", "calls", "denied", "failed"], rows)
    granted, refused, by = rep.approvals()
    if by:
        detail = ", ".join(f"{d} {n:,}" for d, n in by.items())
        lines += ["", f"approvals: {granted:,} granted, {refused:,} not granted ({detail})"]
    if rep.other_events:
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(rep.other_events.items()))
        lines += ["", f"other records: {detail}"]
    if rep.days:
        lines += ["", "audit volume per day (UTC)"]
        lines += _table(
            ["day", "records", "bytes", "runs", "calls"],
            [
                [_day(dn), f"{d.records:,}", _size(d.bytes), f"{d.runs:,}", f"{d.calls:,}"]
                for dn, d in sorted(rep.days.items())
            ],
        )
    if thresholds is not None:
        res = check(rep, thresholds)
        lines.append("")
        if not res.judged:
            lines.append(f"check: not judged ({res.note})")
        elif res.passed:
            lines.append(f"check: passed ({res.note})")
        else:
            lines += [f"check: FAILED: {f}" for f in res.failures]
    return "\n".join(lines)
