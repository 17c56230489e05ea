"""Re-homing: a source record that is an envelope gets its object copied into the target's bucket.

A mirror of an envelope topic that copies envelopes as they are leaves the target site pointing at
the source region's bucket. With ``target.lfs.rehome``, the ``lfs`` target hands every record whose
value is an envelope (:func:`lfs.detect`: KafScale's ``kfs_lfs``, or the legacy ``lfs_version``
shape) to a :class:`Rehomer`, which copies the object into ``target.lfs.s3.bucket`` under this
relay's deterministic key, the key an offloaded record would get (``key_template``, from the source
coordinates and the payload's SHA-256), and returns the envelope to write: the source envelope
naming the new bucket and key, with its size, checksums and other fields kept (always in the
``kfs_lfs`` shape, so a legacy envelope gains its ``sha256``).

An envelope is untrusted input, read by the hydrate target's rules (:class:`lfs.Resolver`): only
``allowed_buckets`` (and prefixes) are read, a claim over ``max_object_size`` or with nothing to
verify is refused before any request, and the copy is used only once its size and every checksum
the envelope gives are verified. A refused or failed envelope is a :class:`RecordError`
(``on_record_error``: stop, or the original record to the dead-letter topic).

Two ways to copy
  * **server** (``CopyObject`` at the target's endpoint, when it can read the source bucket): the
    source object is looked at (HEAD: its length must be the claimed size), copied with
    ``x-amz-copy-source-if-match`` its ETag (a source overwritten meanwhile makes the copy fail and
    start again) and, never over an existing key, ``If-None-Match: *`` where the server honours it.
    The copy is then read back at the target's endpoint and verified; one that does not verify is
    deleted (this relay just created it, and no envelope names it yet). It carries no
    ``kfr-sha256`` metadata: a later attempt that finds it reads it back rather than trust a claim
    made before it was verified. Objects over 5 GiB (``CopyObject``'s limit) are streamed.
  * **stream** (otherwise): the object is read in ranged GETs of ``part_size`` and uploaded as it
    arrives; an object over ``part_size`` goes up as a multipart upload completed only after the
    whole payload verified, so an object that does not verify never appears. Memory: each copy
    holds the part being uploaded and the parts being read (two), about
    ``3 * part_size * concurrency`` in all, whatever the objects' sizes.

Exactly once, as for offload: the key is the same on every attempt, a key is written only if it
is free or holds the same payload (:meth:`S3Uploader.existing`; other bytes stop the relay), an
incomplete multipart upload a killed run left is aborted before the key is written again, and the
envelope naming the copy is committed only after the copy is stored and verified.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import structlog

from lfs import BucketRule, Envelope, EnvelopeError, Hasher, LfsError, PayloadStream, Resolver, StorageError, detect
from lfs.s3 import describe, error_kind, make_client
from relay.backoff import backoff_delay
from relay.message import Message
from relay.settings import Backoff
from relay.target import TargetError
from targets.lfs.config import LfsConfig, RecordError, RehomeConfig, server_side
from targets.lfs.upload import (
    SHA256_METADATA,
    Expected,
    LfsMetrics,
    S3Uploader,
    Stop,
    Stored,
    Upload,
    UploadCancelled,
    UploadJob,
)

log = structlog.get_logger("kafka_lfs_relay.lfs")

T = TypeVar("T")

COPY_LIMIT: Final = 5 * 1024**3
"""The largest object one ``CopyObject`` copies (S3's limit); larger ones are streamed."""

RECORD_ERROR_KINDS: Final = frozenset(
    {"envelope_invalid", "bucket_not_allowed", "too_large", "unverified", "missing_object", "size_mismatch",
     "checksum_mismatch"}
)  # fmt: skip
"""Failures of one envelope (``on_record_error`` decides); any other stops the relay."""

_ATTEMPTS: Final = 3  # copies begun again after the source changed, or the key appeared and vanished
_OTHER_ATTEMPTS: Final = 5  # tries of a source request failing for a reason neither transient nor fatal
_READ_CHUNK: Final = 1024 * 1024

KeyFor = Callable[[str], str]
"""The object key of the record being re-homed, given its payload's SHA-256."""


@dataclass(frozen=True)
class Rehomed(Stored):
    """A re-homed object: where it is now, and the envelope to write for it."""

    envelope: Envelope | None = None


class Rehomer:
    """Copies the objects of source envelopes into the target's bucket; see the module docstring.

    ``uploader`` is the target's (its client, conditional-write probe and never-overwrite checks are
    shared); ``start`` after the uploader's, ``close`` before it.
    """

    def __init__(self, lfs: LfsConfig, uploader: S3Uploader, metrics: LfsMetrics, retry: Backoff) -> None:
        assert lfs.rehome is not None
        self.config: RehomeConfig = lfs.rehome
        self.lfs = lfs
        self.uploader = uploader
        self.metrics = metrics
        self.retry = retry
        self.server = server_side(self.config, lfs.s3)
        self._closed = threading.Event()
        self._source_client: Any = None
        self._source: Resolver | None = None
        self._lock = threading.Lock()
        self._readers: set[Resolver] = set()
        self._pool: ThreadPoolExecutor | None = None

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the source client, the resolver that checks envelopes (no I/O) and the pool of copies."""
        rehome = self.config
        self._source_client = make_client(rehome.s3)
        self._source = Resolver(
            self._source_client, rehome.policy, max_object_size=rehome.max_object_size,
            allow_unverified=rehome.allow_unverified,
        )  # fmt: skip
        self._pool = ThreadPoolExecutor(rehome.concurrency, thread_name_prefix="lfs-rehome")
        log.info(
            "re-homing envelopes",
            bucket=self.lfs.bucket,
            copy="server-side (CopyObject)" if self.server else "streamed through the relay",
            allowed=[r.bucket for r in rehome.policy.rules],
        )

    def close(self) -> None:
        """Abandon every copy (retries end at once); incomplete multipart uploads are aborted as they unwind."""
        self._closed.set()
        with self._lock:
            readers = [self._source, *self._readers]
        for resolver in readers:
            if resolver is not None:
                resolver.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def _reading(self, stop: Stop, at_target: bool = False) -> Iterator[Resolver]:
        """A resolver for one copy: the source's buckets, or (``at_target``) our bucket to verify a copy.

        One per copy, with two ranged GETs in flight: each copy then holds the part being uploaded and
        the two being read, whatever the number of copies. Reads are retried while S3 is unavailable
        or throttling, until the copy is abandoned (``stop``) or the target closes.
        """

        def on_retry(err: StorageError, attempt: int, delay: float) -> None:
            stop.check()  # an abandoned copy stops retrying: UploadCancelled ends its read
            self._on_retry(err, attempt, delay)

        rehome = self.config
        client, rules = (self.uploader.client, [BucketRule(self.lfs.bucket)]) if at_target else (
            self._source_client, rehome.policy,
        )  # fmt: skip
        unverified = at_target or rehome.allow_unverified
        resolver = Resolver(
            client, rules, max_object_size=rehome.max_object_size, allow_unverified=unverified, concurrency=2,
            part_size=self.lfs.part_size, retries=None, backoff=(self.retry.min, self.retry.max),
            on_retry=on_retry,
        )  # fmt: skip
        with self._lock:
            self._readers.add(resolver)
        try:
            if self._closed.is_set():
                raise UploadCancelled()
            yield resolver
        finally:
            with self._lock:
                self._readers.discard(resolver)
            resolver.close()

    # -- one record ------------------------------------------------------------------------------------
    def begin(self, msg: Message, key_for: KeyFor) -> Upload | None:
        """The copy of ``msg``'s object if its value is an envelope, else None (the record is no envelope).

        Refusals that need no request (an invalid envelope, a bucket not allowed, a claim too large,
        nothing to verify) are failed uploads at once.
        """
        assert self._source is not None and self._pool is not None, "start() first"
        what = msg.coordinates()
        try:
            envelope = detect(msg.value)
        except EnvelopeError as exc:
            return Upload.failed(_record_error(what, exc))
        if envelope is None:
            return None
        try:
            self._source.check(envelope)
        except LfsError as exc:
            return Upload.failed(_record_error(what, exc))
        upload = Upload()
        stop = Stop(self._closed, upload.cancel)
        upload.future = self._pool.submit(self._rehome, envelope, key_for, what, stop)
        return upload

    def _rehome(self, envelope: Envelope, key_for: KeyFor, what: str, stop: Stop) -> Rehomed:
        self.metrics.rehomes_in_flight.inc()
        try:
            return self._rehome_once(envelope, key_for, what, stop)
        finally:
            self.metrics.rehomes_in_flight.dec()

    def _rehome_once(self, envelope: Envelope, key_for: KeyFor, what: str, stop: Stop) -> Rehomed:
        try:
            if envelope.sha256 is None:  # a legacy envelope: the key names the payload's SHA-256
                envelope = dataclasses.replace(envelope, sha256=self._sha256_of(envelope, what, stop))
            assert envelope.sha256 is not None
            key = key_for(envelope.sha256)
            moved = dataclasses.replace(envelope, bucket=self.lfs.bucket, key=key, shape="kfs_lfs", unknown_fields=None)
            if self.uploader.existing(what, key, envelope.size, envelope.sha256, stop):
                if envelope.digests() != (("sha256", envelope.sha256),):
                    self._verify(moved, stop)  # the checksums other than sha256 must hold too
            elif self.server and envelope.size <= COPY_LIMIT:
                self._server_copy(envelope, moved, what, stop)
                self.metrics.bytes_rehomed.labels(path="server").inc(envelope.size)
            else:
                self._stream_copy(envelope, moved, what, stop)
                self.metrics.bytes_rehomed.labels(path="stream").inc(envelope.size)
        except LfsError as exc:
            if stop.is_set():
                raise UploadCancelled() from None
            raise _record_error(what, exc) if exc.kind in RECORD_ERROR_KINDS else _fatal(what, exc) from None
        alg = envelope.checksum_alg or "sha256"
        checksum = envelope.checksum or envelope.sha256
        return Rehomed(self.lfs.bucket, key, envelope.size, envelope.sha256, alg, checksum, moved)

    # -- server-side -----------------------------------------------------------------------------------
    def _server_copy(self, envelope: Envelope, moved: Envelope, what: str, stop: Stop) -> None:
        """``CopyObject`` pinned to the source's ETag, never over an existing key; then the copy is verified."""
        up, bucket = self.uploader, self.lfs.bucket
        for _ in range(_ATTEMPTS):
            head = self._source_call("HeadObject", envelope, what, stop, self._source_client.head_object)
            found = int(head.get("ContentLength", -1))
            if found != envelope.size:
                raise RecordError(
                    f"record {what}: size_mismatch: s3://{envelope.bucket}/{envelope.key} holds {found} bytes, its "
                    f"envelope claims {envelope.size}; nothing was copied",
                    "size_mismatch",
                )
            condition = {"IfNoneMatch": "*"} if up.conditional else {}
            copy = partial(
                up.client.copy_object,
                Bucket=bucket,
                Key=moved.key,
                CopySource={"Bucket": envelope.bucket, "Key": envelope.key},
                CopySourceIfMatch=head["ETag"],
                MetadataDirective="REPLACE",
                ContentType=head.get("ContentType") or envelope.content_type or self.lfs.content_type_default,
                **_copy_extra(up),
                **condition,
            )
            try:
                up.call("CopyObject", moved.key, what, copy, stop, expect=("PreconditionFailed", "no_such_key"))
            except Expected as exc:
                if exc.code == "no_such_key":
                    raise RecordError(
                        f"record {what}: missing_object: s3://{envelope.bucket}/{envelope.key} vanished while it "
                        "was being copied",
                        "missing_object",
                    ) from None
                # The key was taken (If-None-Match) or the source changed (its ETag): which one, the key says.
                assert moved.sha256 is not None
                if up.existing(what, moved.key, moved.size, moved.sha256, stop):
                    self._verify(moved, stop)
                    return
                continue
            try:
                self._verify(moved, stop)
            except LfsError:
                # This copy was made just now, into a key that was free, and no envelope names it yet.
                self._delete(moved.key, what, stop)
                raise
            return
        raise TargetError(
            f"re-homing record {what}: s3://{envelope.bucket}/{envelope.key} kept changing while it was copied"
        )

    def _verify(self, moved: Envelope, stop: Stop) -> None:
        """Read the copy back at the target's endpoint and check its size and every checksum; raises LfsError."""
        with self._reading(stop, at_target=True) as reader, reader.open(moved) as stream:
            _drain(stream, stop)

    def _delete(self, key: str, what: str, stop: Stop) -> None:
        up = self.uploader
        up.call("DeleteObject", key, what, lambda: up.client.delete_object(Bucket=self.lfs.bucket, Key=key), stop)

    # -- streamed --------------------------------------------------------------------------------------
    def _stream_copy(self, envelope: Envelope, moved: Envelope, what: str, stop: Stop) -> None:
        """Read the object through the relay and upload it; it appears only once verified."""
        assert moved.sha256 is not None
        if envelope.size <= self.lfs.part_size:
            with self._reading(stop) as reader, reader.open(envelope) as stream:
                data = _read(stream, envelope.size + 1, stop)
            job = UploadJob(
                key_for=lambda _sha256: moved.key,
                data=data,
                alg="sha256",
                expected=None,
                content_type=envelope.content_type or self.lfs.content_type_default,
                what=what,
            )
            self.uploader.submit(job).result()
            return
        up = self.uploader
        up.abort_stale(what, moved.key, stop)
        for _ in range(_ATTEMPTS):
            if up.existing(what, moved.key, moved.size, moved.sha256, stop):
                self._verify(moved, stop)
                return
            if self._multipart_once(envelope, moved, what, stop):
                return
        raise TargetError(
            f"S3 object s3://{self.lfs.bucket}/{moved.key} for record {what} kept appearing and vanishing"
        )

    def _multipart_once(self, envelope: Envelope, moved: Envelope, what: str, stop: Stop) -> bool:
        """One multipart upload fed from the source as it arrives: True once completed, False if the key
        was taken meanwhile; aborted unless completed."""
        assert moved.sha256 is not None
        up, bucket, key = self.uploader, self.lfs.bucket, moved.key
        created = up.call(
            "CreateMultipartUpload",
            key,
            what,
            partial(
                up.client.create_multipart_upload,
                Bucket=bucket,
                Key=key,
                ContentType=envelope.content_type or self.lfs.content_type_default,
                Metadata={SHA256_METADATA: moved.sha256},
                **up.settings.put_extra_args(),
            ),
            stop,
        )
        upload_id = str(created["UploadId"])
        completed = False
        try:
            parts: list[dict[str, Any]] = []
            with self._reading(stop) as reader, reader.open(envelope) as stream:
                # The read that reaches the end verifies size and checksums, before the last part is sent
                # or, for a last part of exactly part_size, before the upload is completed.
                while chunk := _read(stream, self.lfs.part_size, stop):
                    number = len(parts) + 1
                    send = partial(
                        up.client.upload_part, Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    parts.append({"PartNumber": number, "ETag": up.call("UploadPart", key, what, send, stop)["ETag"]})
            condition = {"IfNoneMatch": "*"} if up.conditional else {}
            complete = partial(
                up.client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
            try:
                up.call("CompleteMultipartUpload", key, what, complete, stop, expect=("PreconditionFailed",))
            except Expected:
                return False
            completed = True
            return True
        finally:
            if not completed:
                up.abort(key, upload_id)

    def _sha256_of(self, envelope: Envelope, what: str, stop: Stop) -> str:
        """The SHA-256 of a legacy envelope's payload (which names none), read and verified by what it names."""
        hasher = Hasher("sha256")
        with self._reading(stop) as reader, reader.open(envelope) as stream:
            _drain(stream, stop, hasher)
        log.info("read a legacy envelope's payload to learn its sha256", record=what)
        return hasher.sha256_hex()

    # -- requests to the source ------------------------------------------------------------------------
    def _source_call(self, op: str, envelope: Envelope, what: str, stop: Stop, request: Callable[..., T]) -> T:
        """``request(Bucket=, Key=)`` of the envelope's object, retried while S3 is unavailable or throttling."""
        where = f"s3://{envelope.bucket}/{envelope.key}"
        attempt = 0
        while True:
            stop.check()
            try:
                return request(Bucket=envelope.bucket, Key=envelope.key)
            except Exception as exc:
                kind = error_kind(exc)
                self.metrics.s3_errors.labels(kind=kind, operation=f"rehome:{op}").inc()
                if kind in ("no_such_key", "no_such_bucket"):
                    raise RecordError(
                        f"record {what}: missing_object: {where} does not exist", "missing_object"
                    ) from None
                if kind == "access_denied":
                    raise TargetError(
                        f"S3 denied {op} of {where} for record {what} ({describe(exc)}); check the credentials in "
                        "target.lfs.rehome.s3 and the source bucket's policy"
                    ) from None
                attempt += 1
                if kind not in ("throttled", "unavailable") and attempt >= _OTHER_ATTEMPTS:
                    raise TargetError(
                        f"S3 {op} of {where} for record {what} failed {attempt} times: {describe(exc)}"
                    ) from None
                delay = backoff_delay(self.retry.min, self.retry.max, attempt)
                log.warning("S3 request to the source failed; retrying", operation=op, object=where, kind=kind,
                            error=describe(exc), attempt=attempt, retry_in=round(delay, 2))  # fmt: skip
                stop.wait(delay)

    def _on_retry(self, err: StorageError, attempt: int, delay: float) -> None:
        self.metrics.s3_errors.labels(kind=err.kind, operation="rehome:GetObject").inc()
        log.warning("S3 read for re-homing failed; retrying", bucket=err.bucket, key=err.key[:300], kind=err.kind,
                    error=err.detail, attempt=attempt, retry_in=round(delay, 2))  # fmt: skip


def _copy_extra(up: S3Uploader) -> dict[str, Any]:
    """Encryption and tags of the target's bucket settings, for a ``CopyObject`` (tags replace the source's)."""
    extra = up.settings.put_extra_args()
    if "Tagging" in extra:
        extra["TaggingDirective"] = "REPLACE"
    return extra


def _read(stream: PayloadStream, limit: int, stop: Stop) -> bytes:
    """Up to ``limit`` bytes of ``stream`` (fewer only at its end; the read that finds the end verifies it)."""
    out = bytearray()
    while len(out) < limit:
        stop.check()
        chunk = stream.read(min(_READ_CHUNK, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _drain(stream: PayloadStream, stop: Stop, hasher: Hasher | None = None) -> None:
    """Read ``stream`` to its verified end, keeping nothing (``hasher`` sees every byte)."""
    while chunk := stream.read(_READ_CHUNK):
        stop.check()
        if hasher is not None:
            hasher.update(chunk)


def _record_error(what: str, exc: LfsError) -> RecordError:
    return RecordError(f"record {what} cannot be re-homed: {exc.kind}: {exc}", exc.kind)


def _fatal(what: str, exc: LfsError) -> TargetError:
    return TargetError(
        f"record {what} cannot be re-homed: {exc.kind}: {exc}; check target.lfs.rehome.s3 and the buckets' policies"
    )
