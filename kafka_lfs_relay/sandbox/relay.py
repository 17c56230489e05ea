"""The relay's ``run`` command as a child process: its cluster entries, command line, environment and process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from kafka_lfs_relay.sandbox.kafka import KafkaCluster
from kafka_lfs_relay.sandbox.process import ManagedProcess, SandboxError, log_tail

_Relay = TypeVar("_Relay", bound="RelayProcess")


def cluster_entry(cluster: KafkaCluster, name: str | None = None) -> dict[str, Any]:
    """A ``sources[]``/``target`` config entry for a sandbox cluster, with its TLS/SASL client settings."""
    props = cluster.client_config()
    entry: dict[str, Any] = {"name": name or cluster.name, "bootstrap_servers": props.pop("bootstrap.servers")}
    if props:
        entry["kafka"] = props
    return entry


def relay_argv(config_path: Path, *args: str, module: str = "kafka_lfs_relay") -> list[str]:
    """``python -m MODULE run --config CONFIG ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, "run", "--config", str(config_path), *args]


def relay_env(first_on_path: Path | None = None) -> dict[str, str]:
    """This process's environment with unbuffered output, and ``first_on_path`` (if given) first on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if first_on_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(first_on_path), os.environ.get("PYTHONPATH", "")) if p)
    return env


class RelayProcess:
    """``run`` as a child process in its own session, every start appended to one log file after a marker line.

    Its own session, so that a signal (SIGTERM, SIGKILL, SIGSTOP) reaches the relay and the
    workers it forks alike, and a Ctrl-C aimed at the program that started it does not.
    """

    def __init__(
        self,
        config_path: Path,
        *args: str,
        log_path: Path | None = None,
        name: str = "relay",
        module: str = "kafka_lfs_relay",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.args = args
        self.log_path = log_path or config_path.with_suffix(".log")
        self.name = name
        self.module = module
        self.env = dict(env) if env is not None else relay_env()
        self.cwd = cwd
        self.runs = 0
        self.log_offset = 0  # where the current run's output starts in the log
        self.process: ManagedProcess | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The current run's process (None before the first start)."""
        return self.process.popen if self.process is not None else None

    def start(self: _Relay, *args: str, config: Path | None = None) -> _Relay:
        """Start the relay once more, with ``args`` and ``config`` (instead of its own) for this run only."""
        if self.alive():
            raise SandboxError(f"{self.name} is running (pid {self.process.pid if self.process else None})")
        self.runs += 1
        note = "".join(f" {arg}" for arg in args) + (f" (config {config.name})" if config is not None else "")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== run {self.runs}{note} ===\n".encode())
            self.log_offset = log.tell()
        argv = relay_argv(config or self.config_path, *self.args, *args, module=self.module)
        self.process = ManagedProcess(self.name, argv, self.log_path, self.cwd, self.env)
        self.process.start()
        return self

    def _started(self) -> ManagedProcess:
        if self.process is None:
            raise SandboxError(f"{self.name} has not been started")
        return self.process

    def alive(self) -> bool:
        """True while the current run's process runs."""
        return self.process is not None and self.process.alive()

    def wait(self, timeout: float) -> int | None:
        """The exit code once the relay has exited, or None if it still runs after ``timeout`` seconds."""
        process = self._started()
        return process.returncode if process.wait(timeout) else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the relay's process group."""
        self._started().signal(sig)

    def kill9(self, timeout: float = 30.0) -> None:
        """SIGKILL: the relay dies with whatever it had in flight; waits until it is gone."""
        self._started().kill(timeout)

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM (resuming a paused relay, so that it can drain), then :meth:`wait` for its exit."""
        self.resume()
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the relay keeps its sockets and answers nothing, like a hung host."""
        self._started().pause()

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._started().resume()

    def log_text(self) -> str:
        """Everything the relay printed so far, over all its runs."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the relay printed."""
        return log_tail(self.log_path, lines)
