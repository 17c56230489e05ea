"""`kafka-lfs-relay demo` runs the whole mission on the sandbox and proves it, as a newcomer sees it in a terminal.

The demo runs in a pseudo-terminal of 150x45, like a tmux pane, so everything that reaches the
screen is tested: librdkafka's own lines (if a client wrote them to stderr), the progress lines
redrawn in place, and the summary. One run, small enough for CI.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

COLUMNS, ROWS = 150, 45
EVENTS, LARGE = 2000, 2


def run_in_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; its exit code and every byte it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": str(COLUMNS), "TERM": "xterm"}
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo did not finish in {timeout:.0f} s; so far:\n{render(chunks)}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(60), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: carriage returns and erase-to-end-of-line applied."""
    lines: list[str] = []
    for text in raw.split("\n"):
        buf: list[str] = []
        pos = 0
        i = 0
        while i < len(text):
            if text.startswith("\x1b[K", i):
                del buf[pos:]
                i += 3
                continue
            ch = text[i]
            if ch == "\r":
                pos = 0
            else:
                if pos < len(buf):
                    buf[pos] = ch
                else:
                    buf.append(ch)
                pos += 1
            i += 1
        lines.append("".join(buf))
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def render(chunks: list[bytes]) -> str:
    return "\n".join(screen(b"".join(chunks).decode("utf-8", "replace")))


def test_demo_in_a_terminal_fails_over_offloads_hydrates_and_verifies(tmp_path: Path) -> None:
    """A small demo run, seen in a 150x45 terminal: no client noise, progress that ends on the final
    count, the kill and the switch as the demo's own lines, the summary, under 40 lines in all."""
    argv = [sys.executable, "-m", "kafka_lfs_relay", "demo", "--events", str(EVENTS), "--large", str(LARGE)]
    code, raw = run_in_terminal([*argv, "--dir", str(tmp_path)], timeout=600)
    shown = screen(raw)
    text = "\n".join(shown)
    assert code == 0, text

    # librdkafka never wrote to the terminal itself (its lines start with %<level>|).
    assert not re.search(r"%\d\|", raw), text
    assert len(shown) < 40, text
    assert all(len(line) <= COLUMNS for line in shown), text

    records = EVENTS + LARGE
    assert f"records in the source         {records:,}" in text
    # Each progress line is redrawn in place: one line per step on the screen, ending on the final count.
    for label in ("offload", "hydrate"):
        finals = [line for line in shown if re.match(rf"\s+{label}:", line)]
        assert len(finals) == 1, text
        assert re.fullmatch(rf"\s+{label}:\s+{records:,}/{records:,} records in [\d.]+ s", finals[0]), text
    # The kill and the switch are the demo's own lines, between the offload step's header and its result.
    offload = shown.index(next(line for line in shown if line.startswith("3/5 ")))
    killed = shown.index(next(line for line in shown if line.startswith("  east killed (kill -9) at ")))
    switched = shown.index(next(line for line in shown if line.startswith("  the relay switched from east to west ")))
    assert offload < killed < switched < shown.index(next(line for line in shown if line.startswith("4/5 ")))

    assert "OK: identical, record for record and byte for byte" in text
    assert "east -> west (unreachable" in text
    assert f"objects in S3                 {LARGE}" in text
    assert "kafka-lfs-relay check --config FILE" in text
    assert (tmp_path / "config" / "offload.yml").exists() and (tmp_path / "config" / "hydrate.yml").exists()
    assert not (tmp_path / "sandbox" / "sandbox.json").exists()
