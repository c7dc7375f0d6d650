"""pytest configuration of the langchain-clambot tests."""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, None]:
    """Mark coroutine tests for pytest-asyncio, whatever its mode: this directory's own
    config says ``asyncio_mode = "auto"``, but the repository's root config (strict
    mode) applies when both test trees run in one session. Runs inside pytest-asyncio's
    wrapper of this hook, which then sees the mark."""
    outcome = yield
    if not inspect.iscoroutinefunction(obj):
        return
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, pytest.Function) and item.get_closest_marker("asyncio") is None:
            item.add_marker(pytest.mark.asyncio)
