"""The sandbox's relay process: command line, environment, log markers, and its signals, with a stand-in module."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from kafka_lfs_relay.sandbox import RelayProcess, relay_argv, relay_env

# Stands in for the relay's CLI: prints its command line, then runs until SIGTERM and exits 0.
STAND_IN = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("args", " ".join(sys.argv[1:]), flush=True)
while True:
    time.sleep(0.05)
"""


def _stand_in(tmp_path: Path, *args: str) -> RelayProcess:
    (tmp_path / "stand_in.py").write_text(STAND_IN, encoding="utf-8")
    return RelayProcess(tmp_path / "relay.yml", *args, module="stand_in", cwd=tmp_path)


def _printed(relay: RelayProcess) -> str:
    """What the current run printed, once it printed its command line."""
    deadline = time.monotonic() + 30
    while "args" not in relay.log_text()[relay.log_offset :] and time.monotonic() < deadline:
        time.sleep(0.05)
    return relay.log_text()[relay.log_offset :]


def test_argv_runs_the_module_with_this_interpreter() -> None:
    """``run --config F`` and the extra arguments, for the module named."""
    assert relay_argv(Path("r.yml"), "--stop-at-end") == [
        sys.executable,
        "-m",
        "kafka_lfs_relay",
        "run",
        "--config",
        "r.yml",
        "--stop-at-end",
    ]
    assert relay_argv(Path("r.yml"), module="relay.cli")[2] == "relay.cli"


def test_env_is_unbuffered_with_the_path_given_first(tmp_path: Path) -> None:
    """PYTHONUNBUFFERED set; a given folder goes before whatever PYTHONPATH held."""
    assert relay_env()["PYTHONUNBUFFERED"] == "1"
    path = relay_env(tmp_path)["PYTHONPATH"].split(os.pathsep)
    assert path[0] == str(tmp_path)


def test_runs_are_marked_in_one_log_and_signals_end_them(tmp_path: Path) -> None:
    """Each start appends a marker; wait gives None while it runs; SIGTERM gives its exit code; SIGKILL ends it."""
    relay = _stand_in(tmp_path, "--stop-at-end")
    try:
        relay.start()
        assert _printed(relay).startswith(f"args run --config {tmp_path / 'relay.yml'} --stop-at-end\n")
        assert relay.wait(0.2) is None and relay.alive()
        relay.pause()
        assert relay.terminate(30) == 0, relay.log_tail()
        assert relay.proc is not None and relay.proc.returncode == 0
        relay.start("--once", config=tmp_path / "other.yml")
        assert _printed(relay).startswith(f"args run --config {tmp_path / 'other.yml'} --stop-at-end --once\n")
        assert relay.wait(0.2) is None
        relay.kill9()
        assert not relay.alive() and relay.runs == 2
    finally:
        if relay.alive():
            relay.kill9()
    log = relay.log_text()
    assert "\n=== run 1 ===\nargs run" in log and "\n=== run 2 --once (config other.yml) ===\nargs run" in log
    assert relay.proc is not None and relay.proc.returncode == -signal.SIGKILL
