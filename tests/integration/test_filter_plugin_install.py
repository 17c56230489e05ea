"""The example plugin in examples/kfr-example-filter, installed with pip, is found by its entry point name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kfr-example-filter"

# Run in a fresh interpreter that sees the installed plugin, so this test leaves the venv untouched.
PROBE = textwrap.dedent(
    """
    import json
    from filters import build_filters, load_filter_class
    from kafka_lfs_relay.config.model import FilterConfig
    from relay.message import Message

    cls = load_filter_class("example-even")
    chain = build_filters([FilterConfig(name="evens", type="example-even", config={})])
    def record(offset):
        return Message(None, b"v", (), "t", "east", "orders", 0, offset, 0)
    print(json.dumps({
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "decisions": [chain(record(offset)) for offset in range(4)],
    }))
    """
)


def _setuptools_builds_wheels_offline() -> bool:
    """Whether this venv's setuptools can build the example without fetching build requirements."""
    probe = "import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_pip_installed_example_plugin_loads_by_entry_point_name(tmp_path: Path) -> None:
    """`pip install` of the example makes type `example-even` resolve to its class, which keeps even offsets."""
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)]
    if _setuptools_builds_wheels_offline():
        command.insert(-1, "--no-build-isolation")
    installed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr

    path = [str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert result["class"] == "kfr_example_filter:EvenOffsetFilter"
    assert result["decisions"] == [None, "evens", None, "evens"]
