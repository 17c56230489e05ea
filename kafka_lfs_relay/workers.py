"""``run --workers N``: N relay processes on one machine, sharing the partitions in group mode.

One Python process runs its record handling on one core (the GIL). Workers are plain ``run``
processes of the same config, started by this parent, that join one consumer group (group mode:
``group.id``, by default the relay's name): Kafka shares the partitions among them, each
partition is written by one transactional producer that a new owner fences, and every
assignment resumes from the positions topic. Nothing new coordinates them.

The parent only starts, watches and stops:

- SIGTERM/SIGINT are passed on to every worker, which drains and exits; the parent then exits
  with the worst worker's code (a worker killed by signal N counts as 128 + N).
- A worker that exits while the others run (a crash, kill -9, an error that stops the relay) is
  not restarted here: the parent stops the others (they drain; the group moves nothing twice) and
  exits with that code, so that the supervisor (systemd, Kubernetes) restarts the whole set with
  its own backoff and alerting. Restarting in here would hide a crash loop from the supervisor,
  and letting the rest run on would leave the machine at (N-1)/N of its capacity with nothing
  saying so.
- Worker ``i`` (from 0) serves metrics on the configured port + ``i`` (port 0: each its own
  ephemeral port), and its log lines carry ``worker: i``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import structlog

from kafka_lfs_relay.stopsignals import on_stop_signals

log = structlog.get_logger("kafka_lfs_relay")

_PR_SET_PDEATHSIG = 1


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM if the parent dies without stopping it (kill -9 of the parent)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def supervise(argv: Sequence[str], count: int, poll: float = 0.2) -> int:
    """Run ``count`` workers (``argv`` + ``--worker-index i``) until all have exited; the worst code."""
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all(signum: int) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        log.info("signal received; stopping the workers", signal=signal.Signals(signum).name)
        stopping = True
        stop_all(signum)

    with on_stop_signals(on_signal):
        for i in range(count):
            procs.append(subprocess.Popen([*argv, "--worker-index", str(i)], preexec_fn=_die_with_parent))
        log.info("workers started", workers=count, pids=[p.pid for p in procs])
        codes: dict[int, int] = {}
        while len(codes) < len(procs):
            for i, proc in enumerate(procs):
                if i in codes or proc.poll() is None:
                    continue
                codes[i] = exit_code(proc.returncode)
                if stopping:
                    log.info("worker stopped", worker=i, pid=proc.pid, code=codes[i])
                    continue
                # A worker stopped on its own: stop the rest, and let the supervisor restart the set.
                log.error(
                    "a worker exited; stopping the others (this command restarts none: its supervisor should)",
                    worker=i,
                    pid=proc.pid,
                    code=codes[i],
                )
                stopping = True
                stop_all(signal.SIGTERM)
            time.sleep(poll)
    worst = max(codes.values(), default=0)
    log.info("workers stopped", codes=[codes[i] for i in range(len(procs))], code=worst)
    return worst


def worker_argv(args: Sequence[str]) -> list[str]:
    """The command line of a worker: this interpreter running ``kafka_lfs_relay`` with ``args``."""
    return [sys.executable, "-m", "kafka_lfs_relay", *args]
