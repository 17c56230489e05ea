"""Reading LFS payloads back: detection, the allow-list, ranged concurrent GETs and verification.

An envelope is untrusted input. Detection (:func:`detect`) never parses a value longer than
:data:`~lfs.MAX_ENVELOPE_SIZE`. Before any request, :meth:`Resolver.check` refuses an envelope
whose bucket (or key prefix) is not in the reader's :class:`BucketPolicy`, whose claimed
``size`` is over ``max_object_size``, or that gives nothing at all to verify (a legacy envelope
with checksum ``none``; KafScale's ``none`` envelopes carry ``sha256``, which is verified) unless
``allow_unverified``. The object is then read in ranged GETs of ``part_size`` bytes, up to
``concurrency`` of them in flight, never more than ``size`` + 1 bytes in all (the extra byte, and
the object length S3 reports in ``Content-Range``, reveal an object longer or shorter than
claimed before its body is read). Parts are hashed in order as they arrive, while later parts
are still downloading, with :class:`lfs.Hasher`. The payload is used only after its size and
every digest of :meth:`Envelope.digests` (its ``checksum``, sha256, md5 or crc32, and its
``sha256`` whenever it has one) match.

Memory grows with the bytes the server sends, never with the size an envelope claims: nothing is
allocated before a response has said how long the object is (and that is the claimed size); a
part is read into one buffer of the length the response declares, and :meth:`Resolver.fetch`
appends the parts, in order, to a buffer that grows as they come (a payload of one part is
returned as it was read). A forged envelope claiming gigabytes that points at a small object
costs the few bytes of that object.

Errors are :class:`~lfs.LfsError` subclasses, each with a ``kind`` (see
:mod:`lfs._errors`). A failing request is retried when S3 is unavailable or throttling
(``retries`` times, or forever with ``retries=None``, with capped exponential backoff); a missing
object, a size or checksum mismatch, or a refusal is not.
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final, overload

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from lfs._checksum import Hasher
from lfs._envelope import MAX_ENVELOPE_SIZE, Envelope, decode_envelope, is_lfs_envelope, looks_like_legacy_envelope
from lfs._errors import (
    ChecksumError,
    LfsError,
    ObjectNotAllowedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    SizeError,
    StorageError,
    UnverifiedError,
    _where,
)
from lfs.s3 import S3Settings, describe, error_kind, make_client
from relay.backoff import backoff_delay

_Bytes = bytes | bytearray | memoryview

MIB: Final = 1024 * 1024
DEFAULT_PART_SIZE: Final = 8 * MIB
"""Bytes per ranged GET."""
DEFAULT_MAX_OBJECT_SIZE: Final = 5 * 1024 * MIB
"""Largest payload a :class:`Resolver` fetches unless told otherwise (S3's single-PUT limit)."""
LEGACY_PARSE_LIMIT: Final = MAX_ENVELOPE_SIZE
"""Values up to this size that mention ``"lfs_version"`` are parsed to see whether they are envelopes."""


# -- detection -----------------------------------------------------------------------------------


def detect(value: _Bytes | None) -> Envelope | None:
    """The envelope a record value holds, or None if the value is plain data.

    A value longer than :data:`~lfs.MAX_ENVELOPE_SIZE` (64 KiB) is plain data, without a parse.
    A shorter value is an envelope when it passes KafScale's prefix test
    (:func:`is_lfs_envelope`), the legacy prefix test (:func:`looks_like_legacy_envelope`), or is
    a JSON object with a top-level ``lfs_version`` field. Such a value that does not decode
    raises :class:`~lfs.EnvelopeError`: it is an invalid envelope, not plain data. Never does
    I/O; raises nothing but ``EnvelopeError``.
    """
    if value is None or len(value) > MAX_ENVELOPE_SIZE:
        return None
    if is_lfs_envelope(value) or looks_like_legacy_envelope(value) or _has_legacy_field(value):
        return decode_envelope(value)
    return None


def _has_legacy_field(value: _Bytes) -> bool:
    """Whether ``value`` is a JSON object with a top-level ``lfs_version`` (fields in any order)."""
    if len(value) > LEGACY_PARSE_LIMIT:
        return False
    data = bytes(value)
    if b'"lfs_version"' not in data or not data.lstrip(b" \t\r\n").startswith(b"{"):
        return False
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON at all: plain data that mentions the word
        return False
    return isinstance(doc, dict) and "lfs_version" in doc


# -- the allow-list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketRule:
    """One trusted bucket; with ``prefixes``, only keys starting with one of them."""

    bucket: str
    prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not self.bucket:
            raise ValueError("a bucket rule needs a non-empty bucket name")
        prefixes = tuple(self.prefixes)
        if any(not isinstance(p, str) or not p for p in prefixes):
            raise ValueError(f"bucket {self.bucket!r}: key prefixes must be non-empty strings")
        object.__setattr__(self, "prefixes", prefixes)


RuleLike = str | BucketRule | tuple[str, Iterable[str]]
"""A bucket name (every key), a :class:`BucketRule`, or ``(bucket, prefixes)``."""


class BucketPolicy:
    """The buckets, and optionally key prefixes, a reader fetches from. Everything else is refused.

    Fail closed: a policy needs at least one bucket, and a bucket may be listed once. A key with a
    ``.`` or ``..`` path segment is always refused, because some S3 servers and HTTP stacks
    normalize such paths and would fetch a key other than the one the rule approved.
    """

    def __init__(self, rules: Iterable[RuleLike]) -> None:
        table: dict[str, tuple[str, ...]] = {}
        for item in rules:
            rule = _rule(item)
            if rule.bucket in table:
                raise ValueError(f"bucket {rule.bucket!r} is listed twice")
            table[rule.bucket] = rule.prefixes
        if not table:
            raise ValueError("an allow-list needs at least one bucket")
        self._rules: Mapping[str, tuple[str, ...]] = table

    @property
    def rules(self) -> tuple[BucketRule, ...]:
        """The rules, in the order they were given."""
        return tuple(BucketRule(b, p) for b, p in self._rules.items())

    def check(self, bucket: str, key: str) -> None:
        """Raise :class:`ObjectNotAllowedError` unless ``bucket``/``key`` is allowed."""
        prefixes = self._rules.get(bucket)
        if prefixes is None:
            raise ObjectNotAllowedError(bucket, key, "the bucket is not in the allow-list")
        if any(segment in (".", "..") for segment in key.split("/")):
            raise ObjectNotAllowedError(bucket, key, "the key has a '.' or '..' path segment")
        if prefixes and not key.startswith(prefixes):
            raise ObjectNotAllowedError(bucket, key, "the key is outside the bucket's allowed prefixes")

    def allows(self, bucket: str, key: str) -> bool:
        """Whether ``bucket``/``key`` is allowed."""
        try:
            self.check(bucket, key)
        except ObjectNotAllowedError:
            return False
        return True

    def __repr__(self) -> str:
        return f"BucketPolicy({list(self.rules)!r})"


def _rule(item: RuleLike) -> BucketRule:
    if isinstance(item, BucketRule):
        return item
    if isinstance(item, str):
        return BucketRule(item)
    bucket, prefixes = item
    if isinstance(prefixes, str):
        raise ValueError(f"bucket {bucket!r}: prefixes must be a list of strings, not one string")
    return BucketRule(bucket, tuple(prefixes))


# -- verification --------------------------------------------------------------------------------


class _Verifier:
    """Hashes a payload as it streams by and checks it against every digest of the envelope at the end."""

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.alg = envelope.expected_checksum()[0]
        self.hasher = Hasher(self.alg)

    def update(self, data: _Bytes) -> None:
        self.hasher.update(data)

    def finish(self) -> None:
        env, hasher = self.envelope, self.hasher
        if hasher.size != env.size:
            raise SizeError(env.size, hasher.size, _where(env.bucket, env.key))
        for alg, expected in env.digests():
            actual = hasher.sha256_hex() if alg == "sha256" else hasher.hexdigest()
            if actual != expected:
                raise ChecksumError(expected, actual, alg)


# -- the resolver --------------------------------------------------------------------------------

RetryCallback = Callable[[StorageError, int, float], None]
"""Called before each retry with the error, the attempt number (1, 2...) and the delay in seconds."""


class Resolver:
    """Turns envelopes back into payloads, fetched from S3 and verified. Thread-safe.

    ``s3`` is a boto3 S3 client (used as given, not closed) or :class:`lfs.s3.S3Settings` (a
    client is made from them). ``allowed_buckets`` is a :class:`BucketPolicy` or the rules to
    build one: bucket names, :class:`BucketRule` or ``(bucket, [prefix, ...])``. ``concurrency``
    bounds the ranged GETs in flight across every fetch of this resolver; ``part_size`` is the
    bytes per GET. ``retries`` is how often a request failing with ``unavailable`` or
    ``throttled`` is repeated (None: forever), waiting between ``backoff[0]`` and ``backoff[1]``
    seconds (exponential, with jitter); ``on_retry`` is told about each retry.

    Use :meth:`unwrap` for any record value, :meth:`fetch` for a decoded envelope, :meth:`open`
    to stream a large payload, and :class:`lfs.Record` for lazy access. :meth:`close`
    (or ``with``) stops the worker threads and ends any retry loop.
    """

    def __init__(
        self,
        s3: Any,
        allowed_buckets: BucketPolicy | Iterable[RuleLike],
        *,
        max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
        allow_unverified: bool = False,
        concurrency: int = 4,
        part_size: int = DEFAULT_PART_SIZE,
        retries: int | None = 3,
        backoff: tuple[float, float] = (0.2, 10.0),
        on_retry: RetryCallback | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if part_size < 1:
            raise ValueError("part_size must be at least 1 byte")
        if max_object_size < 0:
            raise ValueError("max_object_size must not be negative")
        if retries is not None and retries < 0:
            raise ValueError("retries must be None (forever) or at least 0")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError("backoff must be (min, max) with 0 < min <= max")
        if isinstance(s3, S3Settings):
            s3 = make_client(replace(s3, max_pool_connections=max(s3.max_pool_connections, concurrency + 2)))
        self._s3 = s3
        self.policy = allowed_buckets if isinstance(allowed_buckets, BucketPolicy) else BucketPolicy(allowed_buckets)
        self.max_object_size = max_object_size
        self.allow_unverified = allow_unverified
        self.concurrency = concurrency
        self.part_size = part_size
        self.retries = retries
        self.backoff = backoff
        self.on_retry = on_retry
        self._closed = threading.Event()
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- public API ------------------------------------------------------------------------------
    @staticmethod
    def detect(value: _Bytes | None) -> Envelope | None:
        """The envelope in ``value``, or None for plain data (see :func:`lfs.detect`)."""
        return detect(value)

    def check(self, envelope: Envelope) -> None:
        """Refuse, without any I/O, an envelope this resolver must not fetch.

        Raises :class:`ObjectNotAllowedError`, :class:`ObjectTooLargeError` or
        :class:`UnverifiedError`.
        """
        self.policy.check(envelope.bucket, envelope.key)
        if envelope.size > self.max_object_size:
            raise ObjectTooLargeError(envelope.bucket, envelope.key, envelope.size, self.max_object_size)
        if not envelope.digests() and not self.allow_unverified:
            raise UnverifiedError(envelope.bucket, envelope.key)

    @overload
    def unwrap(self, value: None) -> tuple[None, None]: ...
    @overload
    def unwrap(self, value: _Bytes) -> tuple[Envelope | None, bytes]: ...
    def unwrap(self, value: _Bytes | None) -> tuple[Envelope | None, bytes | None]:
        """``(envelope, payload)`` for an envelope, ``(None, value)`` for plain data (None stays None).

        The payload is fetched and verified (see :meth:`fetch`). Raises :class:`LfsError`.
        """
        envelope = detect(value)
        if envelope is not None:
            return envelope, self.fetch(envelope)
        if value is None:
            return None, None
        return None, value if isinstance(value, bytes) else bytes(value)

    def fetch(self, envelope: Envelope) -> bytes:
        """The payload ``envelope`` points at, after checking its size and checksums.

        Parts are fetched concurrently and hashed in order as they arrive; their chunks are
        appended, in order, to one buffer that grows with the bytes received (never sized by the
        claim) and becomes the returned bytes without a copy; a payload that arrived in one piece
        (one part) is returned as it arrived. A fetch holds what it received,
        at most ``concurrency`` parts of it not yet in order. Raises :class:`LfsError` (see the
        module docstring); nothing unverified is ever returned.
        """
        self.check(envelope)
        verifier = _Verifier(envelope)
        buffer: io.BytesIO | None = None
        first: bytes | None = None
        for part in self._parts(envelope):
            for chunk in part:
                verifier.update(chunk)
                if first is None and buffer is None:
                    first = chunk  # a payload that arrives in one piece is returned as it is: no copy
                    continue
                if buffer is None:
                    buffer = io.BytesIO()
                    buffer.write(first or b"")
                    first = None
                buffer.write(chunk)
            part.clear()
        verifier.finish()
        if buffer is None:
            return first or b""
        # Nothing else refers to the buffer, so CPython hands it over (trimmed) rather than a copy.
        return buffer.getvalue()

    def open(self, envelope: Envelope) -> PayloadStream:
        """A read-only stream of the payload; it holds at most ``concurrency`` parts at a time.

        Reading past the end raises if the size or a checksum is wrong, and so does ``close()``;
        see :class:`PayloadStream`.
        """
        self.check(envelope)
        return PayloadStream(_chunks(self._parts(envelope)), _Verifier(envelope), envelope.size)

    def close(self) -> None:
        """Stop the worker threads; a fetch still retrying ends with an :class:`LfsError`."""
        self._closed.set()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Resolver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- parts -------------------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._closed.is_set():
                raise LfsError("fetch", "the resolver is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lfs-fetch")
            return self._pool

    def _ranges(self, size: int) -> Iterator[tuple[int, int]]:
        """Inclusive byte ranges covering the payload plus one byte, so an overlong object shows.

        Made one at a time, as the parts are requested: a list of them would be sized by the claim.
        """
        if size == 0:
            yield (0, 0)
            return
        last = (size - 1) // self.part_size * self.part_size
        for start in range(0, last, self.part_size):
            yield (start, start + self.part_size - 1)
        yield (last, size)

    def _parts(self, envelope: Envelope) -> Iterator[list[bytes]]:
        """The payload in order, one part (the chunks received) at a time, up to ``concurrency`` in flight.

        Closing the iterator early cancels the parts not started and stops those running at
        their next chunk.
        """
        size = envelope.size
        ranges = self._ranges(size)
        pending: deque[Future[list[bytes]]] = deque()
        abandoned = threading.Event()
        pool = self._executor()

        def submit() -> bool:
            """Request the next part, if there is one."""
            span = next(ranges, None)
            if span is None:
                return False
            start, end = span
            length = min(end, size - 1) - start + 1 if size else 0
            pending.append(pool.submit(self._get_part, envelope, start, end, length, abandoned))
            return True

        try:
            while len(pending) < self.concurrency and submit():
                pass
            while pending:
                part = pending.popleft().result()
                submit()
                yield part
        except (RuntimeError, CancelledError):  # close() shut the pool down under our feet
            if self._closed.is_set():
                raise LfsError("fetch", "the resolver is closed") from None
            raise
        finally:
            abandoned.set()
            for fut in pending:
                fut.cancel()

    def _get_part(
        self, envelope: Envelope, start: int, end: int, length: int, abandoned: threading.Event
    ) -> list[bytes]:
        """The ``length`` bytes from ``start`` (asking up to ``end``, one past the payload for the last part),
        as the chunks received; retried per policy."""
        attempt = 0
        while True:
            try:
                return self._request_part(envelope, start, end, length, abandoned)
            except StorageError as err:
                if not err.retriable or (self.retries is not None and attempt >= self.retries):
                    raise
                attempt += 1
                delay = backoff_delay(self.backoff[0], self.backoff[1], attempt)
                if self.on_retry is not None:
                    self.on_retry(err, attempt, delay)
                if self._closed.wait(delay):
                    raise LfsError("fetch", "the resolver was closed while retrying") from None

    def _request_part(
        self, envelope: Envelope, start: int, end: int, length: int, abandoned: threading.Event
    ) -> list[bytes]:
        """One ranged GET of ``length`` bytes; never reads more than ``end - start + 1`` bytes, and
        keeps only what arrives (no buffer is sized in advance)."""
        bucket, key, size = envelope.bucket, envelope.key, envelope.size
        where = _where(bucket, key)
        chunks: list[bytes] = []
        filled = 0
        try:
            if size == 0:
                resp = self._s3.get_object(Bucket=bucket, Key=key)
                total: int | None = resp.get("ContentLength")
            else:
                resp = self._s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")
                total = _content_range_total(resp.get("ContentRange"))
                if total is None and resp.get("ContentRange") is None:
                    # The server ignored Range and sent the whole object: only usable from byte 0.
                    total = resp.get("ContentLength")
                    if start != 0:
                        resp["Body"].close()
                        raise StorageError("storage_error", bucket, key, "the server ignored the Range header")
            body = resp["Body"]
            try:
                if total is not None and total != size:
                    raise SizeError(size, total, where)
                limit = end - start + 1
                while filled < limit and not abandoned.is_set():
                    # All that is left of the part at once: one allocation the size the server declared
                    # (never more than asked for), filled straight from the socket.
                    chunk = body.read(limit - filled)
                    if not chunk:
                        break
                    if filled + len(chunk) > length:  # the byte past the claimed size arrived
                        raise SizeError(size, None, where)
                    chunks.append(chunk)
                    filled += len(chunk)
            finally:
                body.close()
        except ClientError as exc:
            raise _client_error(exc, envelope) from None
        except (BotoCoreError, OSError, Urllib3Error) as exc:
            raise StorageError(_transport_kind(exc), bucket, key, describe(exc)) from None
        if filled < length and not abandoned.is_set():
            raise StorageError("unavailable", bucket, key, f"the response ended after {filled} of {length} bytes")
        return chunks


def _chunks(parts: Iterator[list[bytes]]) -> Iterator[bytes]:
    """The chunks of ``parts`` one by one; closing this closes ``parts`` (which stops their GETs)."""
    try:
        for part in parts:
            yield from part
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()


def _content_range_total(header: object) -> int | None:
    """The complete length in a ``Content-Range`` header (``bytes 0-9/100`` or ``bytes */100``)."""
    if not isinstance(header, str) or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _transport_kind(exc: BaseException) -> str:
    """The kind of a failure that is not an S3 error response: the network, or a local refusal."""
    if isinstance(exc, ParamValidationError):
        return "storage_error"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "access_denied"
    return "unavailable"


def _client_error(exc: ClientError, envelope: Envelope) -> LfsError:
    """The LfsError for an S3 error response to a GET of ``envelope``'s object."""
    bucket, key = envelope.bucket, envelope.key
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    if error.get("Code") == "InvalidRange" or meta.get("HTTPStatusCode") == 416:
        headers = meta.get("HTTPHeaders", {})
        total = _content_range_total(headers.get("content-range"))
        return SizeError(envelope.size, total, _where(bucket, key))
    kind = error_kind(exc)
    if kind == "no_such_key":
        return ObjectNotFoundError(bucket, key)
    if kind == "no_such_bucket":
        return ObjectNotFoundError(bucket, key, "does not exist (no such bucket)")
    return StorageError("storage_error" if kind == "other" else kind, bucket, key, describe(exc))


# -- streaming -----------------------------------------------------------------------------------


class PayloadStream(io.RawIOBase):
    """A payload as a read-only binary stream, verified as it is read. Not thread-safe.

    The read that reaches the end raises :class:`SizeError` or :class:`ChecksumError` instead of
    returning ``b""`` when the payload is wrong; a failed fetch raises its :class:`LfsError`.
    ``close()`` raises too unless the whole payload was read and verified: a stream closed early
    raises an :class:`LfsError` saying the payload was not verified. Inside ``with``, an
    exception already in flight is not masked (the stream is closed without verifying). Use
    ``stream.read()`` for everything, or ``shutil.copyfileobj(stream, out)`` then ``close()``.
    """

    def __init__(self, parts: Iterator[_Bytes], verifier: _Verifier | None, size: int) -> None:
        super().__init__()
        self.size = size
        self._parts = parts
        self._verifier = verifier
        self._buf = memoryview(b"")
        self._read = 0
        self._eof = False
        self._error: LfsError | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> PayloadStream:
        """A stream over bytes already at hand (a plain value, or a payload already verified)."""
        return cls(iter((data,)), None, len(data))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into ``buffer``; 0 at the (verified) end."""
        if self.closed:
            raise ValueError("I/O operation on closed payload stream")
        if self._error is not None:
            raise self._error
        target = memoryview(buffer).cast("B")
        while not self._buf:
            if self._eof:
                return 0
            try:
                part = next(self._parts)
            except StopIteration:
                self._eof = True
                self._verify()
                return 0
            except LfsError as exc:
                self._error = exc
                raise
            if self._verifier is not None:
                self._verifier.update(part)
            self._buf = memoryview(part)
        n = min(len(target), len(self._buf))
        target[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._read += n
        return n

    def _verify(self) -> None:
        if self._verifier is None:
            return
        try:
            self._verifier.finish()
        except LfsError as exc:
            self._error = exc
            raise

    @property
    def verified(self) -> bool:
        """True once the whole payload was read and matched its envelope."""
        return self._eof and self._error is None

    def close(self) -> None:
        """Release the stream; raise if the payload was not read to a verified end."""
        if self.closed:
            return
        self._release()
        if self._error is not None:
            raise self._error
        if not self._eof:
            raise LfsError(
                "verify payload",
                f"the stream was closed after {self._read} of {self.size} bytes, so the payload was not verified",
            )

    def _release(self) -> None:
        close_parts = getattr(self._parts, "close", None)
        if close_parts is not None:
            close_parts()
        self._buf = memoryview(b"")
        super().close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._release()  # do not mask the exception already on its way
            return
        self.close()

    def __del__(self) -> None:
        if not self.closed:
            self._release()
