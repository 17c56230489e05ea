"""Child processes a benchmark starts (contenders, tools) and what each one costs in CPU and memory.

Measuring a contender
  Every contender (our relay, MirrorMaker 2, Kafka's perf tools, the plain confluent-kafka loop)
  runs as its own child process, so its cost is its own: *CPU seconds* are the process's user +
  system time (all threads) and *peak RSS* its high-water mark of resident memory (``VmHWM``).
  For a process that exits by itself, CPU comes from ``wait4`` (``ru_utime + ru_stime``) and
  ``VmHWM`` is read from ``/proc/<pid>/status`` every 20 ms while it runs (``ru_maxrss`` cannot be
  used: Linux carries the parent's high-water mark across the fork/exec into it). For a process
  the benchmark stops (MirrorMaker 2, a relay left running) both are read from ``/proc`` at the
  moment the work is done, before it is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka_lfs_relay.sandbox.distribution import java_executable, tools_classpath
from kafka_lfs_relay.sandbox.process import ManagedProcess, log_tail

# The JVM options Kafka's own scripts use (kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS).
KAFKA_JVM_PERFORMANCE_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop every cluster and child we started."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@dataclass
class ProcStats:
    """What one child process cost: wall seconds since start, CPU seconds, peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int
    returncode: int | None = None


_TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / _TICK  # utime, stime (fields 14 and 15)
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


class Child:
    """A measured child process in its own process group, logging to a file.

    Started and signalled through the sandbox's :class:`ManagedProcess`, but reaped here with
    ``wait4``, for the resource usage a reap through ``Popen`` would throw away.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.process = ManagedProcess(name, argv, log_path, cwd, env)
        self.started = 0.0
        self.stats: ProcStats | None = None
        self._hwm = 0

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        """The process (after :meth:`start`)."""
        return self.process.popen

    @property
    def pid(self) -> int:
        """The process id (after :meth:`start`)."""
        assert self.process.pid is not None
        return self.process.pid

    def start(self) -> Child:
        """Start the process."""
        self.started = time.monotonic()
        self.process.start()
        return self

    def sample(self) -> ProcStats:
        """CPU and peak RSS so far, with the wall time since start."""
        cpu, hwm = proc_sample(self.pid)
        self._hwm = max(self._hwm, hwm)
        return ProcStats(time.monotonic() - self.started, cpu, self._hwm)

    def _note_hwm(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.sample()

    def _reap(self, block: bool) -> ProcStats | None:
        if self.stats is not None:
            return self.stats
        self._note_hwm()
        pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        assert self.popen is not None
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.stats = ProcStats(
            time.monotonic() - self.started,
            usage.ru_utime + usage.ru_stime,
            self._hwm,
            self.popen.returncode,
        )
        return self.stats

    def alive(self) -> bool:
        """True while the process runs (reaping it, with its resource usage, once it exits)."""
        return self.popen is not None and self._reap(block=False) is None

    def wait(self, timeout: float) -> ProcStats:
        """Wait for the process to exit by itself; its stats from ``wait4``."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self._reap(block=False)
            if stats is not None:
                return stats
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.02)

    def stop(self, grace: float = 30.0) -> ProcStats:
        """SIGTERM the process group, SIGKILL after ``grace``; its stats from ``wait4``."""
        if self.popen is None:
            return ProcStats(0.0, 0.0, 0)
        if self.alive():
            self.process.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                self.kill()
        stats = self._reap(block=True)
        assert stats is not None
        return stats

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.popen is not None and self.stats is None:
            self.process.signal(signal.SIGKILL)
            self._reap(block=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's log."""
        return log_tail(self.log_path, lines)


def java_argv(main: str, args: Sequence[str], heap: Sequence[str], log4j: Path | None = None) -> list[str]:
    """A ``java`` command line for a class on the tools classpath, with Kafka's script JVM options."""
    argv = [java_executable(), *heap, *KAFKA_JVM_PERFORMANCE_OPTS]
    if log4j is not None:
        argv.append(f"-Dlog4j2.configurationFile={log4j}")
    return [*argv, "-cp", tools_classpath(), main, *args]


def write_log4j(path: Path, log_file: Path, info_loggers: Sequence[str] = ()) -> Path:
    """A log4j2 config that sends everything at WARN (and ``info_loggers`` at INFO) to ``log_file``."""
    lines = [
        "status = error",
        "appender.file.type = File",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for i, name in enumerate(info_loggers):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = INFO"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_no_leftovers(children: Sequence[Child]) -> None:
    """Fail loudly if a child we started is still alive."""
    alive = [c.name for c in children if c.popen is not None and c.stats is None and c.alive()]
    if alive:
        raise RuntimeError(f"still running: {alive}")
