"""S3 uploads for the offloading target: concurrent, one pass over the bytes, retried, never orphaned.

Shape
  A record's upload is run by a *coordinator* thread (pool ``lfs-upload``); every request that
  carries payload bytes (a whole-object PUT, or one part of a multipart upload) runs in the
  *part* pool (``lfs-part``). Both pools have ``upload_concurrency`` threads, so that many
  payload requests are on the wire at once whether records are small or large, and a
  coordinator waiting for its parts can never starve them.

One pass, no copies
  The coordinator hashes each part (:class:`lfs.Hasher`, which releases the GIL) right
  before handing it to the part pool, so hashing overlaps the upload of the earlier parts; a
  value at or under ``part_size`` is hashed while its single PUT is on the wire. Parts are
  ``memoryview`` slices of the record's value, sent through :class:`_ViewReader`, so a value is
  never copied whole.

Checksums
  When the record's ``LFS_BLOB`` header names an expected checksum and the payload does not
  match, a multipart upload is aborted before it completes and the key is deleted; a single PUT
  is deleted once it has landed. Either way :class:`RecordError` says why.

Retries (per request, by :func:`lfs.s3.error_kind`)
  ``throttled``/``unavailable``: forever, with capped exponential backoff and a log line per
  attempt: the relay pauses (the Kafka target's sender waits for the upload, the relay's
  thread waits for the sender) and resumes when S3 is back. ``access_denied``/
  ``no_such_bucket``: :class:`TargetError` at once. Anything else: a few attempts, then
  :class:`TargetError`. A multipart upload that vanished (``NoSuchUpload``) is started again.

Orphans
  Keys are deterministic (see ``targets.lfs.config.KeyTemplate``), so a retry or a restart
  rewrites the same object. Before a multipart upload starts, incomplete multipart uploads of
  the same key left by a killed relay are aborted (best effort: it needs
  ``s3:ListBucketMultipartUploads``; a lifecycle rule with ``AbortIncompleteMultipartUpload``
  is the backstop).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

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


class UploadCancelled(Exception):
    """The upload was abandoned: the target is closing, or dropped the record to re-read it."""


class _UploadLost(Exception):
    """The multipart upload no longer exists on the server (``NoSuchUpload``)."""


@dataclass(frozen=True)
class UploadJob:
    """What to store: the record's value under ``key``, and how to check it.

    ``what`` names the record in logs and errors (its coordinates, never its bytes).
    """

    key: str
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


class _Stop:
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

    def child(self) -> tuple[_Stop, threading.Event]:
        own = threading.Event()
        return _Stop(*self.events, own), own


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
    """Stores record values in S3; see the module docstring. ``start`` before ``submit``; ``close`` last."""

    def __init__(
        self,
        settings: S3Settings,
        concurrency: int,
        part_size: int,
        retry: Backoff,
        metrics: LfsMetrics,
    ) -> None:
        assert settings.bucket is not None
        self.settings = settings
        self.bucket: str = settings.bucket
        self.concurrency = concurrency
        self.part_size = part_size
        self.retry = retry
        self.metrics = metrics
        self._extra = settings.put_extra_args()
        self._closed = threading.Event()
        self._client: Any = None
        self._records: ThreadPoolExecutor | None = None
        self._parts: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Create the client and the two pools."""
        # Coordinators issue small requests while the parts are on the wire: room for both.
        pool = max(self.settings.max_pool_connections, 2 * self.concurrency + 2)
        self._client = make_client(replace(self.settings, max_pool_connections=pool))
        self._records = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lfs-upload")
        self._parts = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lfs-part")

    def submit(self, job: UploadJob) -> Upload:
        """Start storing ``job`` now; returns at once."""
        assert self._records is not None, "start() first"
        upload = Upload()
        stop = _Stop(self._closed, upload.cancel)
        upload.future = self._records.submit(self._store, job, stop)
        return upload

    def close(self) -> None:
        """Abandon what is still running (pending retries end at once) and release the pools."""
        self._closed.set()
        for pool in (self._records, self._parts):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # -- one object ---------------------------------------------------------------------------
    def _store(self, job: UploadJob, stop: _Stop) -> Stored:
        started = time.monotonic()
        self.metrics.uploads_in_flight.inc()
        try:
            single = len(job.data) <= self.part_size
            stored = self._single(job, stop) if single else self._multipart(job, stop)
        finally:
            self.metrics.uploads_in_flight.dec()
        self.metrics.bytes_uploaded.inc(stored.size)
        self.metrics.upload_latency.observe(time.monotonic() - started)
        return stored

    def _single(self, job: UploadJob, stop: _Stop) -> Stored:
        assert self._parts is not None
        hasher = Hasher(job.alg)
        put = self._parts.submit(self._put_object, job, stop)
        hasher.update(job.data)  # while the PUT is on the wire
        put.result()
        self._verify(job, hasher, stop)
        return self._stored(job, hasher)

    def _multipart(self, job: UploadJob, stop: _Stop) -> Stored:
        data = memoryview(job.data)
        size = data.nbytes
        bounds = [(n + 1, lo, min(lo + self.part_size, size)) for n, lo in enumerate(range(0, size, self.part_size))]
        hasher = Hasher(job.alg)
        for _ in range(_LOST_ATTEMPTS):
            try:
                if self._multipart_once(job, data, bounds, hasher, stop):
                    return self._stored(job, hasher)
                break  # checksum mismatch: the upload was aborted before it completed
            except _UploadLost:
                stop.check()
                log.warning("multipart upload vanished on the server; uploading the object again", key=job.key)
        else:
            raise TargetError(
                f"S3 lost the multipart upload of s3://{self.bucket}/{job.key} for record {job.what} "
                f"{_LOST_ATTEMPTS} times in a row"
            )
        self._verify(job, hasher, stop)  # deletes whatever the key holds and raises RecordError
        raise AssertionError("unreachable: a mismatch always raises")

    def _multipart_once(
        self, job: UploadJob, data: memoryview, bounds: list[tuple[int, int, int]], hasher: Hasher, stop: _Stop
    ) -> bool:
        """One multipart upload: True once completed, False if the checksum does not match (aborted)."""
        assert self._parts is not None
        hash_parts = hasher.size < data.nbytes  # a repeated upload does not hash again
        self._abort_stale(job, stop)
        created = self._call(
            "CreateMultipartUpload",
            job,
            partial(
                self._client.create_multipart_upload,
                Bucket=self.bucket,
                Key=job.key,
                **self._content_type(job),
                **self._extra,
            ),
            stop,
        )
        upload_id = str(created["UploadId"])
        parts_stop, fail_parts = stop.child()
        futures: list[Future[str]] = []
        completed = False
        try:
            for number, lo, hi in bounds:
                view = data[lo:hi]
                if hash_parts:
                    hasher.update(view)  # part N is hashed while the parts before it upload
                futures.append(self._parts.submit(self._put_part, job, upload_id, number, view, parts_stop))
            if self._mismatch(job, hasher) is not None:
                return False
            etags = [f.result() for f in futures]
            parts = [{"PartNumber": n, "ETag": etag} for (n, _, _), etag in zip(bounds, etags, strict=True)]
            complete = partial(
                self._client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=job.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            self._call("CompleteMultipartUpload", job, complete, stop)
            completed = True
            return True
        finally:
            if not completed:
                fail_parts.set()
                wait_all(futures)
                self._abort(job, upload_id)

    def _stored(self, job: UploadJob, hasher: Hasher) -> Stored:
        return Stored(self.bucket, job.key, hasher.size, hasher.sha256_hex(), hasher.alg, hasher.hexdigest())

    @staticmethod
    def _content_type(job: UploadJob) -> dict[str, str]:
        return {"ContentType": job.content_type} if job.content_type else {}

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
            f"{job.expected[:72]!r}; the object was not kept"
        )

    def _verify(self, job: UploadJob, hasher: Hasher, stop: _Stop) -> None:
        reason = self._mismatch(job, hasher)
        if reason is None:
            return
        self.metrics.checksum_mismatches.inc()
        self._call("DeleteObject", job, lambda: self._client.delete_object(Bucket=self.bucket, Key=job.key), stop)
        log.warning("payload does not match its LFS_BLOB checksum; object deleted", record=job.what, key=job.key)
        raise RecordError(reason, "checksum_mismatch")

    # -- requests ---------------------------------------------------------------------------------
    def _put_object(self, job: UploadJob, stop: _Stop) -> None:
        self._call(
            "PutObject",
            job,
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=job.key, Body=job.data, **self._content_type(job), **self._extra
            ),
            stop,
        )

    def _put_part(self, job: UploadJob, upload_id: str, number: int, view: memoryview, stop: _Stop) -> str:
        response = self._call(
            "UploadPart",
            job,
            lambda: self._client.upload_part(
                Bucket=self.bucket, Key=job.key, UploadId=upload_id, PartNumber=number, Body=_ViewReader(view)
            ),
            stop,
        )
        return str(response["ETag"])

    def _abort(self, job: UploadJob, upload_id: str) -> None:
        """Abort a multipart upload, once, best effort (a later upload of the key aborts leftovers)."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=job.key, UploadId=upload_id)
        except Exception as exc:
            self.metrics.s3_errors.labels(kind=error_kind(exc), operation="AbortMultipartUpload").inc()
            log.info("could not abort a multipart upload; it is retried with the key", key=job.key, error=describe(exc))

    def _abort_stale(self, job: UploadJob, stop: _Stop) -> None:
        """Abort incomplete multipart uploads of this exact key (left by a killed relay); best effort."""
        stop.check()
        try:
            listing = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=job.key)
            stale = [u["UploadId"] for u in listing.get("Uploads", []) if u.get("Key") == job.key]
        except Exception as exc:
            log.debug("cannot list incomplete multipart uploads", key=job.key, error=describe(exc))
            return
        for upload_id in stale:
            log.info("aborting an incomplete multipart upload of the same key", key=job.key)
            self._abort(job, upload_id)

    def _call(self, op: str, job: UploadJob, request: Callable[[], T], stop: _Stop) -> T:
        """Run one S3 request with the retry policy of the module docstring."""
        attempt = 0
        while True:
            stop.check()
            try:
                return request()
            except Exception as exc:
                kind = error_kind(exc)
                self.metrics.s3_errors.labels(kind=kind, operation=op).inc()
                if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    raise _UploadLost() from None
                where = f"s3://{self.bucket}/{job.key}"
                if kind == "access_denied":
                    raise TargetError(
                        f"S3 denied {op} of {where} for record {job.what} ({describe(exc)}); check the "
                        "credentials and the bucket policy for target.lfs.s3"
                    ) from None
                if kind == "no_such_bucket":
                    raise TargetError(
                        f"S3 bucket {self.bucket!r} does not exist ({op} of {where} for record {job.what}); "
                        "check target.lfs.s3.bucket"
                    ) from None
                attempt += 1
                if kind not in ("throttled", "unavailable") and attempt >= _OTHER_ATTEMPTS:
                    raise TargetError(
                        f"S3 {op} of {where} for record {job.what} failed {attempt} times: {describe(exc)}"
                    ) from None
                delay = backoff_delay(self.retry.min, self.retry.max, attempt)
                log.warning(
                    "S3 request failed; retrying",
                    operation=op,
                    key=job.key,
                    kind=kind,
                    error=describe(exc),
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
                stop.wait(delay)


def cancel_all(uploads: Iterable[Upload]) -> None:
    """Abandon these uploads (their records will be read and uploaded again)."""
    for upload in uploads:
        upload.cancel.set()
