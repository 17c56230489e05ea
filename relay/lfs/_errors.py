"""Exceptions of the LFS SDK.

Contract: every error the SDK raises on purpose is an :class:`LfsError`. Messages are one sentence
that names the operation and the cause, and never contain payload bytes or the raw record value.
"""

from __future__ import annotations

from typing import Any


def _describe(cause: BaseException | str) -> str:
    """Render a cause for a message: exceptions as ``Type: text``, strings as they are."""
    if isinstance(cause, BaseException):
        text = str(cause)
        return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return cause


class LfsError(Exception):
    """An LFS operation failed.

    ``op`` names the operation (``"decode envelope"``, ``"upload"``...); ``cause`` is the
    underlying exception or a short explanation. When ``cause`` is an exception it is also set
    as ``__cause__`` so tracebacks show it.
    """

    op: str
    cause: BaseException | str

    def __init__(self, op: str, cause: BaseException | str) -> None:
        super().__init__(op, cause)
        self.op = op
        self.cause = cause
        if isinstance(cause, BaseException):
            self.__cause__ = cause

    def __str__(self) -> str:
        return f"{self.op} failed: {_describe(self.cause)}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.op, self.cause))


class ChecksumError(LfsError):
    """A payload's checksum did not match the one the envelope (or the caller) expected.

    ``expected`` and ``actual`` are lowercase hex digests, ``alg`` the algorithm that made them.
    """

    expected: str
    actual: str
    alg: str

    def __init__(self, expected: str, actual: str, alg: str = "sha256") -> None:
        super().__init__("verify checksum", f"{alg} mismatch, expected {expected} but got {actual}")
        self.expected = expected
        self.actual = actual
        self.alg = alg

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.expected, self.actual, self.alg))


class EnvelopeError(LfsError):
    """A value that claims to be an LFS envelope (or an Envelope being built) is invalid.

    ``reason`` says what is wrong, e.g. which field is missing or malformed; ``field`` names that
    field when there is one. By contract the message never quotes the record value or payload
    (unknown field names are quoted, shortened); decoders raise it ``from None`` so the
    offending bytes do not travel along in a chained exception either.
    """

    field: str | None

    def __init__(self, reason: str, *, field: str | None = None, op: str = "decode envelope") -> None:
        super().__init__(op, reason)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_envelope_error, (str(self.cause), self.field, self.op))


def _rebuild_envelope_error(reason: str, field: str | None, op: str) -> EnvelopeError:
    """Unpickle helper: :class:`EnvelopeError` takes keyword-only arguments."""
    return EnvelopeError(reason, field=field, op=op)
