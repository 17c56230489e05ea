"""Fixtures of the deploy tests: the Go-built tools (deploy/tools), built once per machine and version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.gotools import GoToolsError, tools_dir


@pytest.fixture(scope="session")
def go_tools() -> Path:
    """The folder with ``promtool`` and ``kubevalidate``; a failed build fails the test, with the reason."""
    try:
        return tools_dir()
    except GoToolsError as exc:
        pytest.fail(str(exc))
