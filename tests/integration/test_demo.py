"""`kafka-lfs-relay demo` runs the whole mission on the sandbox and proves it, as a newcomer would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_fails_over_offloads_hydrates_and_verifies(tmp_path: Path) -> None:
    """A small demo run ends with a visible source switch, S3 objects and a byte-for-byte match."""
    proc = subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "demo", "--events", "2000", "--large", "2", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "OK: identical, record for record and byte for byte" in out
    assert "east -> west (unreachable" in out
    assert "objects in S3                 2" in out
    assert (tmp_path / "config" / "offload.yml").exists() and (tmp_path / "config" / "hydrate.yml").exists()
    assert not (tmp_path / "sandbox" / "sandbox.json").exists()
