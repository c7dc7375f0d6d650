from __future__ import annotations

import pytest

from clambot_tools import Limits, Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """A Sandbox with a short time limit, shared: every run starts clean anyway."""
    return Sandbox(limits=Limits(timeout_s=2))
