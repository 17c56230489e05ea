"""The release: sdist and wheel build and pass twine check; the wheel installs into a fresh venv and runs check."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster
from relay import __version__
from tests.conftest import TopicFactory
from tests.integration.harness import relay_config, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(*command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{command}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc


def test_the_built_wheel_installs_outside_the_checkout_and_checks_a_real_cluster(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """python -m build, twine check, pip install of the wheel in a new venv; --version and check there."""
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT), cwd=tmp_path)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"kafka_lfs_relay-{__version__}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"kafka_lfs_relay-{__version__}.tar.gz"]
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists), cwd=tmp_path)
    assert checked.stdout.count("PASSED") == 2

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    _run(str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheels[0]), cwd=tmp_path)
    cli = str(env_dir / "bin" / "kafka-lfs-relay")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _run(cli, "--version", cwd=outside).stdout.strip() == f"kafka-lfs-relay {__version__}"
    # The installed package, not the checkout, answers.
    where = _run(str(env_dir / "bin" / "python"), "-c", "import relay; print(relay.__file__)", cwd=outside).stdout
    assert where.startswith(str(env_dir))

    topic = topic_factory(kafka_cluster, partitions=2)
    config = write_config(outside / "relay.yml", relay_config([kafka_cluster], kafka_cluster, [{"source": topic}]))
    result = subprocess.run([cli, "check", "--config", str(config)], cwd=outside, capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok      source {kafka_cluster.name}" in result.stdout and "config OK" in result.stdout
