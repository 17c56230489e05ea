"""Child-process plumbing shared by the sandbox's servers: free ports, start, signals, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class SandboxError(RuntimeError):
    """A sandbox server could not be prepared, started or reached; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True when ``pid`` names a live process that is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class ManagedProcess:
    """One server process in its own session, so a signal reaches it and every child it forks.

    The process is started in a new session (``start_new_session``) for two reasons: a Ctrl-C
    aimed at the foreground ``sandbox up`` must not reach the brokers before the sandbox has
    stopped them in order, and with ``--detach`` the servers must outlive the command.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.pid: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process, appending its stdout and stderr to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited and been reaped; None for one known only by its pid."""
        return self.popen.returncode if self.popen is not None else None

    def alive(self) -> bool:
        """True while the process runs (reaping it if it has exited)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group; a process that is already gone is not an error."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; True if it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return not self.alive()

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; resumes a paused process first."""
        if self.pid is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            self.kill()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole process group and wait up to ``timeout`` seconds until it is gone."""
        self.signal(signal.SIGKILL)
        if not self.wait(timeout):
            raise SandboxError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing, like a hung host."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.signal(signal.SIGCONT)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    proc: ManagedProcess | None = None,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until it is true; fail with the process's log tail if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and not proc.alive():
            raise SandboxError(
                f"{what}: {proc.name} exited while starting; last lines of {proc.log_path}:\n{log_tail(proc.log_path)}"
            )
        if time.monotonic() > deadline:
            tail = f"; last lines of {proc.log_path}:\n{log_tail(proc.log_path)}" if proc else ""
            raise SandboxError(f"{what}: not ready after {timeout:.0f}s{tail}")
        time.sleep(interval)
