"""S3 uploads for the offloading target: concurrent, one pass over the bytes, retried, never orphaned,
and never over an object that holds other bytes.

Shape
  A record's upload is run by a *coordinator* thread (pool ``lfs-upload``); every request that
  carries payload bytes (a whole-object PUT, or one part of a multipart upload) runs in the
  *part* pool (``lfs-part``). Both pools have ``upload_concurrency`` threads, so that many
  payload requests are on the wire at once whether records are small or large, and a
  coordinator waiting for its parts can never starve them.

Hash first, then write
  The coordinator hashes the whole value (:class:`lfs.Hasher`, which releases the GIL) before
  the first request: the key names the payload's SHA-256 (``{sha256}``, see
  ``targets.lfs.config.KeyTemplate``), each object carries it as ``x-amz-meta-kfr-sha256``, and a
  value that does not match its ``LFS_BLOB`` checksum is refused (:class:`RecordError`) before
  anything is written. Parts are ``memoryview`` slices of the record's value, sent through
  :class:`_ViewReader`, so a value is never copied whole.

An object is new, or already holds the same bytes
  A key is written only if nothing is there yet, or what is there is the same payload (a retry,
  a restart, another instance of this relay): an object a committed envelope points to is never
  overwritten with other bytes. :meth:`S3Uploader.start` probes once whether the server honours
  conditional writes (``If-None-Match: *``, a PUT of a fresh probe key twice, then its delete):
  * if it does (SeaweedFS 4.x does; AWS S3 documents it), PUT and CompleteMultipartUpload carry
    ``If-None-Match: *``; a ``412 PreconditionFailed`` means the key exists, and it is compared;
  * if not, the key is looked at first (HEAD) and written only if absent. A writer of the same
    key between the HEAD and the write can only be another instance of this relay writing the
    same bytes (keys name the relay and the payload's SHA-256).
  A multipart upload looks first in either case, so a retry of a large record uploads nothing.
  An existing object is the same payload when its length matches and its ``kfr-sha256``
  metadata names our SHA-256 or, without that metadata, when its bytes hash to it (read back,
  streamed). Another payload at the key stops the relay (:class:`TargetError`, naming bucket and
  key): the key is taken by a writer the relay does not know, and no fresh key could be made
  exactly-once.

Retries (per request, by :func:`lfs.s3.error_kind`)
  ``throttled``/``unavailable``: forever, with capped exponential backoff and a log line per
  attempt: the relay pauses (the Kafka target's sender waits for the upload, the relay's
  thread waits for the sender) and resumes when S3 is back. ``credentials`` (none, or
  rejected), ``access_denied``, ``no_such_bucket``: :class:`TargetError` at once, also during
  the start-up probe, so a relay without usable credentials stops at start with one line.
  Anything else: a few attempts, then :class:`TargetError`. A multipart upload that vanished
  (``NoSuchUpload``) is started again.

Orphans, and what is never touched
  Keys are deterministic, so a retry or a restart rewrites (in fact: finds) the same object.
  Before a multipart upload starts, incomplete multipart uploads of the same key that were
  begun before this uploader started (left by a killed run of this relay: the key names it) are
  aborted, best effort (it needs ``s3:ListBucketMultipartUploads``; a lifecycle rule with
  ``AbortIncompleteMultipartUpload`` is the backstop). Uploads begun since, by anyone, are left
  alone, and so is every object: the uploader deletes nothing but its own probe key.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Final, TypeVar

import structlog
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lfs import Hasher
from lfs.s3 import S3Settings, describe, error_kind, make_client
from relay.backoff import backoff_delay
from relay.metrics import PREFIX
from relay.settings import Backoff
from relay.target import TargetError
from targets.lfs.config import RecordError

log = structlog.get_logger("kafka_lfs_relay.lfs")

T = TypeVar("T")

_OTHER_ATTEMPTS = 5  # tries of a request failing for a reason that is neither transient nor fatal
_LOST_ATTEMPTS = 3  # times a vanished multipart upload is started again
_WRITE_ATTEMPTS = 3  # times a key found taken, then gone, is written again
_READ_CHUNK = 1024 * 1024  # bytes read at a time when an existing object is hashed

SHA256_METADATA: Final = "kfr-sha256"
"""User metadata (``x-amz-meta-kfr-sha256``) every object carries: its payload's SHA-256."""

PROBE_NAME: Final = ".kfr-conditional-write-probe-"
"""Start of the probe key's last segment (under the prefix the target gives the uploader)."""


class LfsMetrics:
    """The offloading target's metrics, registered next to the relay's own (``kafka_lfs_relay_lfs_*``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = f"{PREFIX}_lfs"
        self.records_offloaded = Counter(
            f"{p}_records_offloaded", "Records whose value went to S3 and whose envelope is committed.", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.records_passed_through = Counter(
            f"{p}_records_passed_through", "Records committed unchanged (not offloaded).", ["topic"], registry=registry
        )
        self.records_dead_lettered = Counter(
            f"{p}_records_dead_lettered", "Records committed to the dead-letter topic, by reason.", ["topic", "reason"],
            registry=registry,
        )  # fmt: skip
        self.bytes_uploaded = Counter(f"{p}_bytes_uploaded", "Payload bytes stored in S3.", registry=registry)
        self.records_rehomed = Counter(
            f"{p}_records_rehomed", "Envelope records whose object was copied into the target's bucket (committed).",
            ["topic"], registry=registry,
        )  # fmt: skip
        self.bytes_rehomed = Counter(
            f"{p}_bytes_rehomed", "Payload bytes copied into the target's bucket, by path: server or stream.",
            ["path"], registry=registry,
        )  # fmt: skip
        self.upload_latency = Histogram(
            f"{p}_upload_latency_seconds",
            "Time to store one object in S3, retries included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.s3_errors = Counter(
            f"{p}_s3_errors", "Failed S3 requests, by error kind and operation.", ["kind", "operation"],
            registry=registry,
        )  # fmt: skip
        self.checksum_mismatches = Counter(
            f"{p}_checksum_mismatches", "Payloads that did not match the checksum of their LFS_BLOB header.",
            registry=registry,
        )  # fmt: skip
        self.uploads_in_flight = Gauge(f"{p}_uploads_in_flight", "Objects being uploaded now.", registry=registry)
        self.rehomes_in_flight = Gauge(
            f"{p}_rehomes_in_flight", "Objects being copied into the target's bucket now.", registry=registry
        )


class UploadCancelled(Exception):
    """The upload was abandoned: the target is closing, or dropped the record to re-read it."""


class _UploadLost(Exception):
    """The multipart upload no longer exists on the server (``NoSuchUpload``)."""


class Expected(Exception):
    """A request failed in a way its caller asked to handle itself: ``code`` is the S3 code or kind."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class UploadJob:
    """What to store: the record's value under the key ``key_for(sha256 of the value)``, and how to check it.

    ``what`` names the record in logs and errors (its coordinates, never its bytes).
    """

    key_for: Callable[[str], str]
    data: bytes
    alg: str
    expected: str | None
    content_type: str | None
    what: str


@dataclass(frozen=True)
class Stored:
    """A payload durably in S3: where, how big, its SHA-256 and its ``alg`` checksum (lowercase hex)."""

    bucket: str
    key: str
    size: int
    sha256: str
    alg: str
    checksum: str


class Upload:
    """One record's upload: a future for its :class:`Stored` result, and a way to abandon it."""

    def __init__(self, future: Future[Stored] | None = None) -> None:
        self.cancel = threading.Event()
        self.future: Future[Stored] = future if future is not None else Future()

    @classmethod
    def failed(cls, exc: BaseException) -> Upload:
        """An upload that failed before it started (e.g. a record over the size limit)."""
        future: Future[Stored] = Future()
        future.set_exception(exc)
        return cls(future)

    def result(self) -> Stored:
        """Wait for the outcome; raises :class:`RecordError`, :class:`TargetError` or :class:`UploadCancelled`."""
        return self.future.result()


class Stop:
    """Any of several events: the uploader closing, the record abandoned, or its sibling parts failing."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def check(self) -> None:
        if self.is_set():
            raise UploadCancelled()

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.events[0].wait(min(left, 0.1))

    def child(self) -> tuple[Stop, threading.Event]:
        own = threading.Event()
        return Stop(*self.events, own), own


class _ViewReader:
    """A read-only, seekable file over a memoryview: botocore streams a part from it without a copy.

    Each ``read`` copies only the chunk asked for (botocore and urllib3 read 8 KiB to 1 MiB).
    """

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def __len__(self) -> int:
        return self._view.nbytes

    def read(self, size: int | None = -1) -> bytes:
        end = self._view.nbytes if size is None or size < 0 else min(self._view.nbytes, self._pos + size)
        chunk = self._view[self._pos : end].tobytes()
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._view.nbytes}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class S3Uploader:
    """Stores record values in S3; see the module docstring. ``start`` before ``submit``; ``close`` last.

    ``probe_prefix`` is where :meth:`start` writes (and deletes) its conditional-write probe: a
    key prefix of this relay's own (the target gives ``{prefix}/{relay}/``). ``conditional``
    forces the outcome of the probe (``None``: probe).
    """

    def __init__(
        self,
        settings: S3Settings,
        concurrency: int,
        part_size: int,
        retry: Backoff,
        metrics: LfsMetrics,
        probe_prefix: str = "",
        conditional: bool | None = None,
    ) -> None:
        assert settings.bucket is not None
        self.settings = settings
        self.bucket: str = settings.bucket
        self.concurrency = concurrency
        self.part_size = part_size
        self.retry = retry
        self.metrics = metrics
        self.probe_prefix = probe_prefix
        self.conditional = conditional
        """Whether the server honours ``If-None-Match: *`` (known once :meth:`start` returned)."""
        self.started_at = datetime.now(timezone.utc)
        self._extra = settings.put_extra_args()
        self._closed = threading.Event()
        self._client: Any = None
        self._records: ThreadPoolExecutor | None = None
        self._parts: ThreadPoolExecutor | None = None
        self._multipart: _MultipartWriter | None = None

    @property
    def client(self) -> Any:
        """The boto3 client of the target's bucket (made by :meth:`start`)."""
        return self._client

    def start(self) -> None:
        """Create the client and the two pools; learn whether the server honours conditional writes."""
        # Coordinators issue small requests while the parts are on the wire: room for both.
        pool = max(self.settings.max_pool_connections, 2 * self.concurrency + 2)
        self._client = make_client(replace(self.settings, max_pool_connections=pool))
        self.started_at = datetime.now(timezone.utc)
        if self.conditional is None:
            self.conditional = _probe_conditional_writes(self, Stop(self._closed))
        self._records = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lfs-upload")
        self._parts = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lfs-part")
        self._multipart = _MultipartWriter(self, self._parts)

    def submit(self, job: UploadJob) -> Upload:
        """Start storing ``job`` now; returns at once."""
        assert self._records is not None, "start() first"
        upload = Upload()
        stop = Stop(self._closed, upload.cancel)
        upload.future = self._records.submit(self._store, job, stop)
        return upload

    def close(self) -> None:
        """Abandon what is still running (pending retries end at once) and release the pools."""
        self._closed.set()
        for pool in (self._records, self._parts):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # -- what a key holds -----------------------------------------------------------------------
    def existing(self, what: str, key: str, size: int, sha256: str, stop: Stop) -> bool:
        """True if ``key`` holds the payload of ``size`` bytes with ``sha256`` already, False if nothing is
        there; other bytes stop the relay. ``what`` names the record in errors."""
        try:
            head = self.call(
                "HeadObject",
                key,
                what,
                lambda: self._client.head_object(Bucket=self.bucket, Key=key),
                stop,
                expect=("no_such_key",),
            )
        except Expected:
            return False
        found_size = int(head.get("ContentLength", -1))
        if found_size == size:
            if str(head.get("Metadata", {}).get(SHA256_METADATA, "")).lower() == sha256:
                return True
            found = self._hash_object(what, key, stop)
            if found is None:
                return False  # deleted since the HEAD
            if found == sha256:
                return True
            theirs = f"sha256 {found}"
        else:
            theirs = "another length"
        raise TargetError(
            f"S3 object s3://{self.bucket}/{key} already holds other bytes ({found_size} bytes, {theirs}) than record "
            f"{what} ({size} bytes, sha256 {sha256}), so the relay stops rather than overwrite an object "
            "an envelope may point to: another writer uses this key"
        )

    def _hash_object(self, what: str, key: str, stop: Stop) -> str | None:
        """The SHA-256 of what ``key`` holds, read back streamed; None if it is gone."""

        def read() -> str:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            hasher = Hasher("sha256")
            try:
                while chunk := body.read(_READ_CHUNK):
                    stop.check()
                    hasher.update(chunk)
            finally:
                body.close()
            return hasher.sha256_hex()

        try:
            return self.call("GetObject", key, what, read, stop, expect=("no_such_key",))
        except Expected:
            return None

    # -- one object ---------------------------------------------------------------------------
    def _store(self, job: UploadJob, stop: Stop) -> Stored:
        started = time.monotonic()
        self.metrics.uploads_in_flight.inc()
        try:
            hasher = Hasher(job.alg)
            hasher.update(job.data)  # before any request: the key and the metadata name the SHA-256
            reason = self._mismatch(job, hasher)
            if reason is not None:
                self.metrics.checksum_mismatches.inc()
                log.warning("payload does not match its LFS_BLOB checksum; nothing was written", record=job.what)
                raise RecordError(reason, "checksum_mismatch")
            key = job.key_for(hasher.sha256_hex())
            if len(job.data) <= self.part_size:
                self._single(job, key, hasher, stop)
            else:
                assert self._multipart is not None
                self._multipart.store(job, key, hasher, stop)
        finally:
            self.metrics.uploads_in_flight.dec()
        self.metrics.bytes_uploaded.inc(hasher.size)
        self.metrics.upload_latency.observe(time.monotonic() - started)
        return Stored(self.bucket, key, hasher.size, hasher.sha256_hex(), hasher.alg, hasher.hexdigest())

    def _object_args(self, job: UploadJob, hasher: Hasher) -> dict[str, Any]:
        """What every new object carries: its Content-Type, its SHA-256 as metadata, encryption and tags."""
        content_type = {"ContentType": job.content_type} if job.content_type else {}
        return {**content_type, "Metadata": {SHA256_METADATA: hasher.sha256_hex()}, **self._extra}

    def _single(self, job: UploadJob, key: str, hasher: Hasher, stop: Stop) -> None:
        """One PUT, unless ``key`` already holds the payload."""
        assert self._parts is not None
        for _ in range(_WRITE_ATTEMPTS):
            if not self.conditional and self.existing(job.what, key, hasher.size, hasher.sha256_hex(), stop):
                return
            put = self._parts.submit(self._put_object, job, key, hasher, stop)
            try:
                put.result()
                return
            except Expected:  # 412: the key exists
                pass
            if self.existing(job.what, key, hasher.size, hasher.sha256_hex(), stop):
                return
        raise TargetError(f"S3 object s3://{self.bucket}/{key} for record {job.what} kept appearing and vanishing")

    # -- checksums ------------------------------------------------------------------------------
    @staticmethod
    def _mismatch(job: UploadJob, hasher: Hasher) -> str | None:
        """Why the payload does not match its ``LFS_BLOB`` checksum, or None if it does (or none was given)."""
        if job.expected is None:
            return None
        alg = hasher.alg if hasher.alg != "none" else "sha256"
        actual = hasher.sha256_hex() if alg == "sha256" else hasher.hexdigest()
        if actual == job.expected:
            return None
        return (
            f"record {job.what}: payload {alg} is {actual} but its LFS_BLOB header expects "
            f"{job.expected[:72]!r}; nothing was written"
        )

    # -- requests ---------------------------------------------------------------------------------
    def _put_object(self, job: UploadJob, key: str, hasher: Hasher, stop: Stop) -> None:
        condition = {"IfNoneMatch": "*"} if self.conditional else {}
        self.call(
            "PutObject",
            key,
            job.what,
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=job.data,
                **self._object_args(job, hasher),
                **condition,
            ),
            stop,
            expect=("PreconditionFailed",),
        )

    def abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload this uploader created, once, best effort."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            self.metrics.s3_errors.labels(kind=error_kind(exc), operation="AbortMultipartUpload").inc()
            log.info("could not abort a multipart upload; a lifecycle rule must", key=key, error=describe(exc))

    def abort_stale(self, what: str, key: str, stop: Stop) -> None:
        """Abort incomplete multipart uploads of this exact key begun before this uploader started; best effort.

        The key names this relay, so those were left by an earlier run of it (killed mid-upload).
        Uploads begun since (another instance of this relay, still at work) are left alone.
        """
        stop.check()
        try:
            listing = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            stale = [
                u["UploadId"]
                for u in listing.get("Uploads", [])
                if u.get("Key") == key and _before(u.get("Initiated"), self.started_at)
            ]
        except Exception as exc:
            log.debug("cannot list incomplete multipart uploads", key=key, error=describe(exc))
            return
        for upload_id in stale:
            log.info("aborting an incomplete multipart upload an earlier run left", key=key, record=what)
            self.abort(key, upload_id)

    def call(
        self, op: str, key: str, what: str, request: Callable[[], T], stop: Stop, expect: Collection[str] = ()
    ) -> T:
        """Run one S3 request with the retry policy of the module docstring.

        A failure whose S3 error code or kind is in ``expect`` raises :class:`Expected` at once.
        """
        attempt = 0
        while True:
            stop.check()
            try:
                return request()
            except UploadCancelled:
                raise
            except Exception as exc:
                kind = error_kind(exc)
                code = str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""
                if code == "412":
                    code = "PreconditionFailed"
                if code in expect or kind in expect:
                    raise Expected(code if code in expect else kind) from None
                self.metrics.s3_errors.labels(kind=kind, operation=op).inc()
                if code == "NoSuchUpload":
                    raise _UploadLost() from None
                where = f"s3://{self.bucket}/{key}"
                if kind == "credentials":
                    raise TargetError(
                        f"S3 {op} of {where} for {_named(what)} failed: no usable credentials ({describe(exc)}); "
                        "this does not pass by retrying: check access_key_id/secret_access_key, profile or role_arn "
                        "in target.lfs.s3, or the AWS environment the relay runs in (IRSA, instance role)"
                    ) from None
                if kind == "access_denied":
                    raise TargetError(
                        f"S3 denied {op} of {where} for {_named(what)} ({describe(exc)}); check the "
                        "credentials and the bucket policy for target.lfs.s3"
                    ) from None
                if kind == "no_such_bucket":
                    raise TargetError(
                        f"S3 bucket {self.bucket!r} does not exist ({op} of {where} for {_named(what)}); "
                        "check target.lfs.s3.bucket"
                    ) from None
                attempt += 1
                if kind not in ("throttled", "unavailable") and attempt >= _OTHER_ATTEMPTS:
                    raise TargetError(
                        f"S3 {op} of {where} for {_named(what)} failed {attempt} times: {describe(exc)}"
                    ) from None
                delay = backoff_delay(self.retry.min, self.retry.max, attempt)
                log.warning(
                    "S3 request failed; retrying",
                    operation=op,
                    key=key,
                    kind=kind,
                    error=describe(exc),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                stop.wait(delay)


class _MultipartWriter:
    """An object larger than a part, as a multipart upload of the uploader's key: its parts sent from
    the part pool, the upload started again when the server loses it, and aborted unless it completes."""

    def __init__(self, uploader: S3Uploader, parts: ThreadPoolExecutor) -> None:
        self._up = uploader
        self._parts = parts

    def store(self, job: UploadJob, key: str, hasher: Hasher, stop: Stop) -> None:
        """A multipart upload, unless ``key`` already holds the payload."""
        up = self._up
        data = memoryview(job.data)
        size = data.nbytes
        bounds = [(n + 1, lo, min(lo + up.part_size, size)) for n, lo in enumerate(range(0, size, up.part_size))]
        up.abort_stale(job.what, key, stop)
        lost = 0
        for _ in range(_WRITE_ATTEMPTS + _LOST_ATTEMPTS):
            if up.existing(job.what, key, hasher.size, hasher.sha256_hex(), stop):
                return  # a retry, or a restart: the same payload is stored already
            try:
                if self._once(job, key, data, bounds, hasher, stop):
                    return
            except _UploadLost:
                stop.check()
                lost += 1
                if lost >= _LOST_ATTEMPTS:
                    raise TargetError(
                        f"S3 lost the multipart upload of s3://{up.bucket}/{key} for record {job.what} "
                        f"{_LOST_ATTEMPTS} times in a row"
                    ) from None
                log.warning("multipart upload vanished on the server; uploading the object again", key=key)
        raise TargetError(f"S3 object s3://{up.bucket}/{key} for record {job.what} kept appearing and vanishing")

    def _once(
        self,
        job: UploadJob,
        key: str,
        data: memoryview,
        bounds: list[tuple[int, int, int]],
        hasher: Hasher,
        stop: Stop,
    ) -> bool:
        """One multipart upload: True once completed, False if the key was taken meanwhile (412; aborted)."""
        up = self._up
        created = up.call(
            "CreateMultipartUpload",
            key,
            job.what,
            partial(up.client.create_multipart_upload, Bucket=up.bucket, Key=key, **up._object_args(job, hasher)),
            stop,
        )
        upload_id = str(created["UploadId"])
        parts_stop, fail_parts = stop.child()
        futures: list[Future[str]] = []
        completed = False
        try:
            for number, lo, hi in bounds:
                futures.append(self._parts.submit(self._put_part, job, key, upload_id, number, data[lo:hi], parts_stop))
            etags = [f.result() for f in futures]
            parts = [{"PartNumber": n, "ETag": etag} for (n, _, _), etag in zip(bounds, etags, strict=True)]
            condition = {"IfNoneMatch": "*"} if up.conditional else {}
            complete = partial(
                up.client.complete_multipart_upload,
                Bucket=up.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
            try:
                up.call("CompleteMultipartUpload", key, job.what, complete, stop, expect=("PreconditionFailed",))
            except Expected:
                return False
            completed = True
            return True
        finally:
            if not completed:
                fail_parts.set()
                wait_all(futures)
                up.abort(key, upload_id)

    def _put_part(self, job: UploadJob, key: str, upload_id: str, number: int, view: memoryview, stop: Stop) -> str:
        up = self._up
        response = up.call(
            "UploadPart",
            key,
            job.what,
            lambda: up.client.upload_part(
                Bucket=up.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=_ViewReader(view)
            ),
            stop,
        )
        return str(response["ETag"])


def _probe_conditional_writes(up: S3Uploader, stop: Stop) -> bool:
    """PUT a fresh key twice with ``If-None-Match: *``: the second is refused iff the server honours it.

    The probe key is deleted afterwards (it was just written, by us). A server that refuses the
    probe (access denied to that key, the header not implemented) is taken not to honour it:
    the HEAD-then-write path is safe there too.
    """
    key = f"{up.probe_prefix}{PROBE_NAME}{uuid.uuid4().hex}"
    what = "the conditional-write probe"

    def put() -> None:
        up.call(
            "PutObject",
            key,
            what,
            lambda: up.client.put_object(Bucket=up.bucket, Key=key, Body=b"", IfNoneMatch="*"),
            stop,
            expect=("PreconditionFailed", "access_denied", "other"),
        )

    try:
        put()
    except Expected as exc:
        log.warning(
            "S3 refused the conditional-write probe; keys are looked at (HEAD) before they are written",
            bucket=up.bucket,
            key=key,
            error=exc.code,
        )
        return False
    try:
        put()
        honoured = False
    except Expected as exc:
        honoured = exc.code == "PreconditionFailed"
    try:
        up.call(
            "DeleteObject",
            key,
            what,
            lambda: up.client.delete_object(Bucket=up.bucket, Key=key),
            stop,
            expect=("access_denied", "other"),
        )
    except Expected as exc:
        log.warning("could not delete the conditional-write probe", bucket=up.bucket, key=key, error=exc.code)
    log.info(
        "S3 conditional writes probed",
        bucket=up.bucket,
        honoured=honoured,
        path="If-None-Match: *" if honoured else "HEAD, then write",
    )
    return honoured


def _named(what: str) -> str:
    """``record <coordinates>``, or ``what`` itself when it names something else (the probe)."""
    return what if what.startswith("the ") else f"record {what}"


def _before(initiated: object, moment: datetime) -> bool:
    """Whether an upload's ``Initiated`` time is surely before ``moment`` (an unknown time is not).

    Servers report whole seconds (truncated), so a time within a second before ``moment`` may
    belong to an upload begun just after it: only times a full second earlier count.
    """
    if not isinstance(initiated, datetime):
        return False
    if initiated.tzinfo is None:
        initiated = initiated.replace(tzinfo=timezone.utc)
    return initiated <= moment - timedelta(seconds=1)


def cancel_all(uploads: Iterable[Upload]) -> None:
    """Abandon these uploads (their records will be read and uploaded again)."""
    for upload in uploads:
        upload.cancel.set()
