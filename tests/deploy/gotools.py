"""promtool and kubevalidate, built from deploy/tools (Go, from the Go module proxy) on first use.

Both come out of one ``go build`` of the module in ``deploy/tools``: promtool is its ``tool``
(``github.com/prometheus/prometheus/cmd/promtool``, built without the service discoveries it
does not need for rules: tag ``remove_all_sd``), kubevalidate its own package. The binaries are
kept under ``~/.cache/kafka-lfs-relay/go-tools/<hash>/``, the hash of the module's files and of the
Go version, so later runs reuse them and a change of either builds again. A machine without Go
fails the tests that need it, with the reason; nothing is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "deploy" / "tools"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kafka-lfs-relay" / "go-tools"
TOOLS = ("promtool", "kubevalidate")


class GoToolsError(RuntimeError):
    """The tools could not be built: no Go, or the build failed (the message has its output)."""


def _key(go: str) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest.update(version.encode())
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def tools_dir() -> Path:
    """The folder holding ``promtool`` and ``kubevalidate``, built first if this version is not cached."""
    go = shutil.which("go")
    if go is None:
        raise GoToolsError(
            "Go is not on PATH; it builds promtool and kubevalidate (deploy/tools) from the module proxy"
        )
    out = CACHE / _key(go)
    if all((out / tool).exists() for tool in TOOLS):
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:  # two sessions building at once would only waste a core
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((out / tool).exists() for tool in TOOLS):
            return out
        staging = Path(tempfile.mkdtemp(dir=CACHE, prefix=".build-"))
        env = {**os.environ, "GOFLAGS": "-mod=readonly"}
        command = [go, "build", "-tags", "remove_all_sd", "-trimpath", "-ldflags=-s", "-o", f"{staging}/"]
        proc = subprocess.run(
            [*command, "tool", "./kubevalidate"], cwd=SOURCE, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise GoToolsError(f"go build in deploy/tools failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out
