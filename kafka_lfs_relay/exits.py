"""Exit codes of the command line, and the one line a bug is reported in."""

from __future__ import annotations

from typing import Final

OK: Final = 0
"""The command did what it was asked."""

FAILED: Final = 1
"""Stopped by the user's config or clusters: a mistake, a refusal, or a state it must not go on from
(the line says which). :class:`relay.errors.RelayError` subclasses may name another code."""

INTERNAL_ERROR: Final = 70
"""Ended by a bug (EX_SOFTWARE), not by a user mistake."""


def internal_error(exc: BaseException) -> str:
    """An exception that is a bug, for the one line the CLI prints: its type and message on one line.

    The caller prints it through the config's :class:`~relay.errors.SecretMasker`; the traceback,
    if any, goes to the log.
    """
    kind = (
        type(exc).__qualname__
        if type(exc).__module__ == "builtins"
        else f"{type(exc).__module__}.{type(exc).__qualname__}"
    )
    message = " ".join(str(exc).split())
    return f"internal error: {kind}{': ' + message if message else ''} (a bug; please report it)"
