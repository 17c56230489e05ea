"""pytest plugin: a session-wide SeaweedFS S3 server for the integration tests.

Register it with ``pytest_plugins = ["tests.fixtures_s3"]`` in the top-level conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kafka_lfs_relay.sandbox.s3 import S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3Server shared by the whole session, stopped at its end.

    A server that cannot start is an error, never a skip: a missing S3 must not turn the
    integration suite green.
    """
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
