"""How the relay under test is launched: config file, command line, environment (this tree or a past revision)."""

from __future__ import annotations

import os
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from bench.paths import ROOT, WORK
from kafka_lfs_relay import sandbox


def relay_argv(config_path: Path, *extra: str) -> list[str]:
    """The real CLI: ``kafka-lfs-relay run --config F`` with this interpreter.

    ``$BENCH_RELAY_MODULE`` (default ``kafka_lfs_relay.cli``) names another module with the same command
    line, to measure a candidate change to the relay against the same scenario.
    """
    return sandbox.relay_argv(config_path, *extra, module=os.environ.get("BENCH_RELAY_MODULE", "kafka_lfs_relay.cli"))


def revision_tree(rev: str) -> Path:
    """The relay's packages as they were at git revision ``rev``, unpacked once into the work folder.

    For A/B runs against an earlier release in one invocation (``git archive``, so the revision
    must be in this clone's history).
    """
    out = WORK / f"rev-{rev}"
    if not out.exists():
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", rev], capture_output=True, text=True, check=True
        ).stdout.split()
        packages = [n for n in ("relay", "lfs", "targets", "filters", "kafka_lfs_relay") if n in names]
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *packages], capture_output=True, check=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(out, filter="data")
    return out


def revision_argv(tree: Path, config_path: Path, *extra: str) -> list[str]:
    """The ``run`` command line of the relay unpacked in ``tree`` (its CLI module moved between releases).

    Run it with ``cwd=tree``: ``python -m`` puts the working directory first on the path.
    """
    module = "kafka_lfs_relay.cli" if (tree / "kafka_lfs_relay" / "cli.py").exists() else "relay.cli"
    return sandbox.relay_argv(config_path, *extra, module=module)


def revision_env(tree: Path) -> dict[str, str]:
    """The environment of the relay unpacked in ``tree``: that tree on ``PYTHONPATH``, not this repository."""
    return {**relay_env(), "PYTHONPATH": str(tree)}


def relay_env() -> dict[str, str]:
    """The environment our relay runs with (the repository first on ``PYTHONPATH``)."""
    return sandbox.relay_env(ROOT)


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    """Write a YAML file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
