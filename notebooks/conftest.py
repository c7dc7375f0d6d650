"""pytest configuration for ``pytest --nbmake notebooks/``.

It closes a gap of nbmake (1.5.5): a cell that fails without an ``error`` output stops the
notebook, yet nbmake reports the notebook as passed, because it looks for the failure in
the error outputs only. IPython's ``UsageError`` is such a failure: an unknown magic (say,
``%%js_sandbox`` when ``%load_ext clambot_tools`` did not register it) or an invalid
``%%js_sandbox`` line is printed to stderr, and every cell after it silently never runs.
Here that cell is reported as the notebook's failure, with what it printed.
"""

from __future__ import annotations

from typing import Any

try:
    from nbmake import nb_run  # type: ignore[import-untyped]
    from nbmake.nb_result import NotebookError  # type: ignore[import-untyped]
except ImportError:  # nbmake not installed: nothing to fix
    nb_run = None


def _stopped_at(nb: Any) -> NotebookError | None:
    """The error of the last cell that ran (nbmake calls this only after a cell failed)."""
    ran = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and c.get("execution_count") is not None
    ]
    if not ran:
        return None
    i = ran[-1]
    cell = nb.cells[i]
    stderr = "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )
    lines = [line for line in stderr.splitlines() if line.strip()]
    summary = lines[-1] if lines else f"cell {i} failed without an error output"
    trace = f"{'-' * 75}\n{cell.source}\n{stderr}"
    return NotebookError(summary=summary, trace=trace, failing_cell_index=i)


if nb_run is not None and hasattr(nb_run.NotebookRun, "_get_error"):
    _nbmake_get_error = nb_run.NotebookRun._get_error

    def _get_error(self: Any, nb: Any) -> NotebookError | None:
        found: NotebookError | None = _nbmake_get_error(self, nb)
        return found if found is not None else _stopped_at(nb)

    nb_run.NotebookRun._get_error = _get_error
