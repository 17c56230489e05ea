"""Clean-up every integration test gets, whether it passed or not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import stop_leftover_relays


@pytest.fixture(autouse=True)
def _no_relay_outlives_its_test() -> Iterator[None]:
    """A test that failed before stopping its relays leaves none running for the tests after it."""
    yield
    stop_leftover_relays()
