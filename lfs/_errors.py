"""Exceptions of the LFS SDK.

Contract: every error the SDK raises on purpose is an :class:`LfsError`. Messages are one sentence
that names the operation and the cause, and never contain payload bytes or the raw record value.

Every error has a ``kind``: a short, stable name for metrics, logs and error headers.

=====================  ======================================  =====================================
kind                   raised as                               meaning
=====================  ======================================  =====================================
``envelope_invalid``   :class:`EnvelopeError`                  looks like an envelope, does not decode
``bucket_not_allowed`` :class:`ObjectNotAllowedError`          bucket/key outside the reader's allow-list
``too_large``          :class:`ObjectTooLargeError`            claimed size over the reader's maximum
``unverified``         :class:`UnverifiedError`                nothing to verify, and that not allowed
``missing_object``     :class:`ObjectNotFoundError`            the object (or its bucket) does not exist
``size_mismatch``      :class:`SizeError`                      the object is not as long as claimed
``checksum_mismatch``  :class:`ChecksumError`                  the payload's digest differs
``access_denied``,     :class:`StorageError`                   S3 refused or failed the request
``unavailable``,
``throttled``,
``storage_error``
=====================  ======================================  =====================================
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
    kind: str = "error"

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
    kind = "checksum_mismatch"

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
    kind = "envelope_invalid"

    def __init__(self, reason: str, *, field: str | None = None, op: str = "decode envelope") -> None:
        super().__init__(op, reason)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_envelope_error, (str(self.cause), self.field, self.op))


def _rebuild_envelope_error(reason: str, field: str | None, op: str) -> EnvelopeError:
    """Unpickle helper: :class:`EnvelopeError` takes keyword-only arguments."""
    return EnvelopeError(reason, field=field, op=op)


def _where(bucket: str, key: str, limit: int = 200) -> str:
    """``s3://bucket/key`` from untrusted input, shortened and escaped for a message."""
    text = f"s3://{bucket}/{key}"
    shown = text[:limit] + ("..." if len(text) > limit else "")
    return shown if shown.isprintable() else repr(shown)


class ObjectNotAllowedError(LfsError):
    """The envelope names a bucket (or a key) this reader was not configured to trust.

    Nothing was fetched. ``reason`` says which rule refused it.
    """

    kind = "bucket_not_allowed"

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        super().__init__("check allow-list", f"{_where(bucket, key)} is not allowed: {reason}")
        self.bucket = bucket
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.bucket, self.key, self.reason))


class ObjectTooLargeError(LfsError):
    """The envelope claims a payload larger than the reader accepts; nothing was fetched.

    ``limit`` is the largest claim accepted; ``why`` optionally says where that limit comes from.
    """

    kind = "too_large"

    def __init__(self, bucket: str, key: str, size: int, limit: int, why: str = "") -> None:
        reason = f" ({why})" if why else ""
        super().__init__(
            "check size", f"{_where(bucket, key)} claims {size} bytes, more than the maximum of {limit} bytes{reason}"
        )
        self.bucket = bucket
        self.key = key
        self.size = size
        self.limit = limit
        self.why = why

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.bucket, self.key, self.size, self.limit, self.why))


class UnverifiedError(LfsError):
    """The envelope gives nothing to verify (algorithm ``none``, no ``sha256``) and the reader does not allow that."""

    kind = "unverified"

    def __init__(self, bucket: str, key: str) -> None:
        reason = "gives nothing to verify (checksum algorithm none, no sha256) and unverified payloads are not allowed"
        super().__init__("check checksum", f"{_where(bucket, key)} {reason}")
        self.bucket = bucket
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.bucket, self.key))


class ObjectNotFoundError(LfsError):
    """The object the envelope points at does not exist (deleted, expired, or never written)."""

    kind = "missing_object"

    def __init__(self, bucket: str, key: str, detail: str = "does not exist") -> None:
        super().__init__("fetch", f"{_where(bucket, key)} {detail}")
        self.bucket = bucket
        self.key = key
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.bucket, self.key, self.detail))


class SizeError(LfsError):
    """The object's length differs from the envelope's ``size``.

    ``actual`` is the object's length when known, else None (e.g. only "shorter than" is known).
    """

    kind = "size_mismatch"

    def __init__(self, expected: int, actual: int | None, where: str = "") -> None:
        got = "a different length" if actual is None else f"{actual} bytes"
        prefix = f"{where} has " if where else "payload has "
        super().__init__("verify size", f"{prefix}{got}, the envelope says {expected} bytes")
        self.expected = expected
        self.actual = actual
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.expected, self.actual, self.where))


class StorageError(LfsError):
    """S3 failed a request. ``kind`` is ``access_denied``, ``unavailable``, ``throttled`` or ``storage_error``.

    ``retriable`` is True for ``unavailable`` and ``throttled``: the same request may succeed
    later. ``cause`` is a secret-free description of the S3 error.
    """

    def __init__(self, kind: str, bucket: str, key: str, cause: str) -> None:
        super().__init__("fetch", f"{_where(bucket, key)}: {cause}")
        self.kind = kind
        self.bucket = bucket
        self.key = key
        self.detail = cause

    @property
    def retriable(self) -> bool:
        """Whether retrying the same request may succeed."""
        return self.kind in ("unavailable", "throttled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.bucket, self.key, self.detail))
