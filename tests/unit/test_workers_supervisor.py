"""The parent of ``run --workers N``: worker indexes, the worst exit code, and stopping the rest when one exits."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_lfs_relay import workers

# A stand-in worker: records its index, then either exits with a code after a delay or waits for SIGTERM.
WORKER = """
import os, signal, sys, time
index = int(sys.argv[-1])
out, plan = sys.argv[1], sys.argv[2].split(",")
code = plan[index]
def stop(signum, frame):
    open(f"{out}/{index}.stopped", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)  # before saying it started: a SIGTERM from then on is handled
open(f"{out}/{index}.started", "w").close()
if code == "wait":
    time.sleep(60)
    sys.exit(9)
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not all(os.path.exists(f"{out}/{i}.started") for i in range(len(plan))):
    time.sleep(0.02)
sys.exit(int(code))
"""


@pytest.fixture(autouse=True)
def _keep_signals() -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in handlers.items():
        signal.signal(s, h)


def _argv(tmp_path: Path, plan: str) -> list[str]:
    return [sys.executable, "-c", WORKER, str(tmp_path), plan]


def test_a_worker_that_exits_stops_the_others_and_its_code_is_the_result(tmp_path: Path) -> None:
    """Worker 1 exits with 3: worker 0 is stopped (SIGTERM, drains, 0) and the parent exits 3."""
    assert workers.supervise(_argv(tmp_path, "wait,3"), 2, poll=0.05) == 3
    assert {p.name for p in tmp_path.iterdir()} == {"0.started", "1.started", "0.stopped"}


def test_sigterm_to_the_parent_is_passed_to_every_worker_and_gives_zero(tmp_path: Path) -> None:
    """SIGTERM to the parent reaches each worker (each with its own index), which drains and exits 0: so does the
    parent."""

    def stop_when_started() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(tmp_path.glob("*.started"))) < 3:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by supervise's handler, on the main thread

    threading.Thread(target=stop_when_started, daemon=True).start()
    assert workers.supervise(_argv(tmp_path, "wait,wait,wait"), 3, poll=0.05) == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{i}.{what}" for i in range(3) for what in ("started", "stopped")}


def test_the_worst_code_wins() -> None:
    """A worker killed by a signal counts as 128 + the signal, as a shell says."""
    assert workers.exit_code(-9) == 137 and workers.exit_code(1) == 1 and workers.exit_code(0) == 0


def test_auto_is_the_cores_this_process_may_use() -> None:
    """auto counts the CPU affinity, which containers and taskset narrow."""
    assert 1 <= workers.cores() <= (os.cpu_count() or 1)
