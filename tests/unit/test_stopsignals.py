"""The commands hand SIGTERM and SIGINT back as they found them."""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from kafka_lfs_relay.stopsignals import on_stop_signals


def test_the_handler_runs_inside_and_the_previous_ones_are_back_after() -> None:
    """A signal inside the block reaches the handler; after it, the host's handlers are in place again."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    got: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)

    with on_stop_signals(handler):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert got == [signal.SIGTERM, signal.SIGINT]
    assert {s: signal.getsignal(s) for s in before} == before


def test_the_previous_handlers_are_back_when_the_command_fails() -> None:
    """An exception leaving the block restores the handlers too."""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), on_stop_signals(lambda *_: None):
        raise RuntimeError("the relay stopped")
    assert signal.getsignal(signal.SIGINT) is before
