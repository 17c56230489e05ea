"""SIGTERM and SIGINT handled for the length of a command, then handed back as they were."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``handler`` inside the block; restore the handlers found after it.

    The commands also run inside other programs (the tests call ``main()``): a handler left behind
    after the command returned would turn the host's Ctrl-C into a call on a relay that is gone,
    and the host could no longer be interrupted.
    """
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            # None: a handler installed from C that Python cannot name; the default is the closest.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
