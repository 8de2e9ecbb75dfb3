"""The real Jaeger for the trace tests (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tracing.jaeger import Jaeger


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    """One Jaeger per test module: each module starts from an empty in-memory store (the
    searches that must find nothing stay meaningful)."""
    with Jaeger() as running:
        yield running
