"""The offloading target (``type: lfs``): large values go to S3, a ``kfs_lfs`` envelope goes to Kafka.

It is the Kafka target (:class:`targets.kafka.KafkaTarget`: one transaction per batch, resume
positions in the positions topic within it) with :class:`Offload` as its transform
(:mod:`targets.kafka.transform`):

* as a run is written (``begin``, the relay's thread), each record is checked for offload
  (:func:`targets.lfs.config.offload_reason`: value over ``threshold``, an ``LFS_BLOB`` header,
  or an always-offload topic) and an offloaded one's upload starts at once, so uploads run ahead
  of the Kafka transactions and concurrently with each other; the Kafka target keeps the run
  with offloaded records standing without their value (see Memory below).
* as the transaction holding the run is produced (``outputs``, the sender's thread), each
  record is made once, in order: for an offloaded record, once its upload is stored, the envelope
  record (same key, headers, timestamp and partition); small records pass through unchanged. A record
  that cannot be offloaded (checksum mismatch, over ``s3.max_object_size``) stops the relay
  (``on_record_error: fail``) or goes to ``dead_letter_topic`` unchanged with a
  ``kfr-lfs-error`` header (``dead-letter``); the dead-letter topic is an extra topic of the
  Kafka target, written in the transaction of the batch its record came from, so it resumes
  like the main one.

With ``rehome``, a source record that is itself an envelope is not passed through: its object is
copied into this target's bucket (:mod:`targets.lfs.rehome`) like an upload, and the envelope written
names the copy.

Exactly once: a source offset is acknowledged only when the transaction holding its envelope is
committed, and that transaction is only begun once its objects are stored. Object keys come from
the relay's name, the source coordinates and the payload's SHA-256 (``key_template``), so the
upload a crash or a retry repeats finds the same object with the same bytes instead of leaving an
orphan, while another relay, or a recreated source topic, gets keys of its own. A key is only
written when it is free or holds the same payload already: an object a committed envelope
points to is never overwritten with other bytes (see :mod:`targets.lfs.upload`).

Throughput: an upload starts when its run is written, and uploads run ahead of the envelopes
as far as the relay's byte budget (``max_in_flight``, original record bytes) allows: in a Kafka
batch an offloaded record weighs what its envelope does, so ``target.batch.max_bytes`` does not
hold uploads back. ``upload_concurrency`` PUTs and parts are in flight at once; records above
``part_size`` are split into parts uploaded in parallel, so a single record keeps every upload
busy.

Memory: the relay's byte budget counts a record until it is acknowledged, as with the Kafka
target, but an offloaded record's value is let go as soon as its object is stored: the Kafka
target holds the record without its value (:class:`_Offloaded`), and only the upload (and, for a
dead-letter topic, the failed upload) keeps a reference to the value. The uploader slices values
with memoryviews and never copies one whole.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote

import structlog

from relay.message import Message
from relay.metrics import RelayMetrics
from relay.run import Run
from relay.settings import Backoff, ClusterConfig
from relay.target import TargetError
from targets import kafka
from targets.context import TargetContext
from targets.kafka import KafkaTarget
from targets.lfs.config import (
    ERROR_HEADER,
    KeyTemplate,
    LfsConfig,
    LfsTargetConfig,
    RecordError,
    build_envelope,
    expected_checksum,
    offload_reason,
)
from targets.lfs.rehome import Rehomed, Rehomer
from targets.lfs.upload import LfsMetrics, S3Uploader, Stored, Upload, UploadCancelled, UploadJob, cancel_all

log = structlog.get_logger("kafka_lfs_relay.lfs")

_Coordinates = tuple[str, int, int]  # source topic, partition, offset
_HEADROOM = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Offloaded(Message):
    """An offloaded record as the Kafka target holds it until its envelope is committed: no value.

    Everything the Kafka target and the relay's acknowledgement need (source coordinates, size,
    key, headers, timestamp) is kept; the value lives only as long as its upload needs it.
    """


def _key_for(
    template: KeyTemplate, prefix: str, relay: str, coords: _Coordinates, target_topic: str, sha256: str
) -> str:
    """The object key of the record at ``coords`` (source topic, partition, offset) whose payload has ``sha256``."""
    topic, partition, offset = coords
    return template.render(prefix, topic, target_topic, partition, offset, relay, sha256)


def _replace_value(msg: Message, value: bytes | None, cls: type[Message] = Message) -> Message:
    return cls(
        msg.key, value, msg.headers, msg.topic, msg.source_cluster, msg.source_topic,
        msg.source_partition, msg.source_offset, msg.timestamp_ms, msg.size,
    )  # fmt: skip


class _Pending:
    """An offloaded record waiting for its upload; ``original`` (with the value) is kept only for a dead letter."""

    __slots__ = ("original", "upload")

    def __init__(self, upload: Upload, original: Message) -> None:
        self.upload = upload
        self.original: Message | None = original
        upload.future.add_done_callback(self._done)

    def _done(self, future: Future[Stored]) -> None:
        # Stored, failed for good or abandoned: the value is no longer needed anywhere in this target.
        if future.cancelled() or not isinstance(future.exception(), RecordError):
            self.original = None


class Offload:
    """Offloads large values to S3 and has the Kafka target write envelopes: its transform. See the module docstring."""

    def __init__(self, lfs: LfsConfig, retry: Backoff, metrics: RelayMetrics) -> None:
        self.lfs = lfs
        self.metrics = LfsMetrics(metrics.registry)
        probe_prefix = "/".join(p for p in (lfs.s3.prefix, quote(lfs.relay, safe="")) if p) + "/"
        self.uploader = S3Uploader(lfs.s3, lfs.upload_concurrency, lfs.part_size, retry, self.metrics, probe_prefix)
        self.rehomer = Rehomer(lfs, self.uploader, self.metrics, retry) if lfs.rehome else None
        self._lock = threading.Lock()
        self._uploads: dict[_Coordinates, _Pending] = {}
        # What outputs made of each record, counted when the record is committed.
        self._outcomes: dict[_Coordinates, str] = {}

    # -- targets.kafka.Transform ---------------------------------------------------------------------
    @property
    def extra_topics(self) -> tuple[str, ...]:
        """The dead-letter topic, if there is one."""
        return (self.lfs.dead_letter_topic,) if self.lfs.dead_letter_topic else ()

    def start(self) -> None:
        """Start the uploader (it probes the bucket first), then the re-homer, which shares its client."""
        self.uploader.start()
        if self.rehomer is not None:
            self.rehomer.start()

    def topics_ready(self) -> None:
        """Nothing to read from the target topics."""

    def routes_added(self, targets: Sequence[str]) -> None:
        """Nothing to know of the target topics."""

    def begin(self, run: Run) -> tuple[Run, list[int]]:
        """Start the upload of each offloaded record of ``run``; the run as kept, offloaded records without
        their value (see Memory in the module docstring), and what each record weighs in a batch."""
        kept: list[Message] = []
        weights: list[int] = []
        for message in run.messages():
            upload = self._begin(message)
            if upload is None:
                kept.append(message)
                weights.append(message.size)
                continue
            with self._lock:
                self._uploads[message.coordinates_key()] = _Pending(upload, message)
            kept.append(_replace_value(message, None, _Offloaded))
            weights.append(_ENVELOPE_WEIGHT)
        return run.built(kept), weights

    def outputs(self, run: Run) -> Iterator[Message]:
        """Each record of ``run`` as it is produced: the envelope of an offloaded one, once its object is stored."""
        for message in run.records:
            yield self._transform(message)

    def committed(self, runs: Sequence[Run]) -> None:
        """Count what became of each record of ``runs``."""
        with self._lock:
            outcomes = [
                (msg, self._outcomes.pop(msg.coordinates_key(), "passed")) for run in runs for msg in run.records
            ]
        for msg, outcome in outcomes:
            if outcome == "offloaded":
                self.metrics.records_offloaded.labels(topic=msg.source_topic).inc()
            elif outcome == "rehomed":
                self.metrics.records_rehomed.labels(topic=msg.source_topic).inc()
            elif outcome == "passed":
                self.metrics.records_passed_through.labels(topic=msg.source_topic).inc()
            else:
                reason = outcome.split(":", 1)[1]
                self.metrics.records_dead_lettered.labels(topic=msg.source_topic, reason=reason).inc()

    def drop(self) -> None:
        """Forget every upload not yet turned into an envelope (the relay re-reads those records)."""
        with self._lock:
            pending, self._uploads = list(self._uploads.values()), {}
            self._outcomes.clear()
        cancel_all(p.upload for p in pending)

    def close(self) -> None:
        """Abandon any upload still running and stop the re-homer, then the uploader it shares."""
        self.drop()
        if self.rehomer is not None:
            self.rehomer.close()
        self.uploader.close()

    # -- offload ------------------------------------------------------------------------------------
    def _begin(self, msg: Message) -> Upload | None:
        """The upload for ``msg`` if it is offloaded, else None."""
        lfs = self.lfs
        key_for = partial(_key_for, lfs.key_template, lfs.s3.prefix, lfs.relay, msg.coordinates_key(), msg.topic)
        if self.rehomer is not None and (rehomed := self.rehomer.begin(msg, key_for)) is not None:
            return rehomed  # an envelope: its object is copied into our bucket (targets.lfs.rehome)
        if offload_reason(msg, lfs.threshold, lfs.always_offload_topics) is None:
            return None
        assert msg.value is not None
        try:
            alg, expected = expected_checksum(msg, lfs.checksum_alg)
            size = len(msg.value)
            if size > lfs.s3.max_object_size:
                raise RecordError(
                    f"record {msg.coordinates()} is {size} bytes, more than target.lfs.s3.max_object_size "
                    f"({lfs.s3.max_object_size} bytes)",
                    "too_large",
                )
        except RecordError as exc:
            return Upload.failed(exc)
        job = UploadJob(
            key_for=key_for,
            data=msg.value,
            alg=alg,
            expected=expected,
            content_type=self._content_type(msg),
            what=msg.coordinates(),
        )
        return self.uploader.submit(job)

    def _content_type(self, msg: Message) -> str:
        for name, value in reversed(msg.headers):
            if name.lower() == "content-type" and value:
                return value.decode("utf-8", "replace")
        return self.lfs.content_type_default

    def _transform(self, msg: Message) -> Message:
        """The record to produce for ``msg`` (the sender's thread, once per record, in order)."""
        coords = msg.coordinates_key()
        with self._lock:
            pending = self._uploads.pop(coords, None)
        if pending is None:
            if isinstance(msg, _Offloaded):  # never produce an offloaded record's stand-in (a null value)
                raise TargetError(f"the upload of record {msg.coordinates()} was lost; the relay must restart")
            self._outcome(coords, "passed")
            return msg
        try:
            stored = pending.upload.result()
        except RecordError as exc:
            original = pending.original
            assert original is not None, "a failed upload keeps its record"
            return self._record_error(original, exc)
        except (UploadCancelled, CancelledError):
            raise TargetError(
                f"the upload of record {msg.coordinates()} was abandoned because the target is closing"
            ) from None
        if isinstance(stored, Rehomed) and stored.envelope is not None:
            self._outcome(coords, "rehomed")
            return _replace_value(msg, stored.envelope.encode())
        envelope = build_envelope(
            msg,
            bucket=stored.bucket,
            key=stored.key,
            size=stored.size,
            sha256=stored.sha256,
            alg=stored.alg,
            checksum=stored.checksum,
            header_allowlist=self.lfs.header_allowlist,
            proxy_id=self.lfs.proxy_id,
        )
        self._outcome(coords, "offloaded")
        return _replace_value(msg, envelope.encode())

    def _record_error(self, msg: Message, exc: RecordError) -> Message:
        dlq = self.lfs.dead_letter_topic
        if self.lfs.on_record_error == "fail" or dlq is None:
            raise TargetError(f"{exc.reason} (target.lfs.on_record_error is fail)")
        log.warning("record sent to the dead-letter topic", record=msg.coordinates(), topic=dlq, reason=exc.reason)
        self._outcome(msg.coordinates_key(), f"dead:{exc.kind}")
        headers = (*msg.headers, (ERROR_HEADER, exc.reason.encode("utf-8", "replace")))
        return dataclasses.replace(msg, topic=dlq, headers=headers)

    def _outcome(self, coords: _Coordinates, outcome: str) -> None:
        if outcome == "passed":
            return  # the default: nothing to remember
        with self._lock:
            self._outcomes[coords] = outcome


# What an offloaded record weighs in a Kafka batch: about its envelope. Counting its original
# size cut a batch at one 64 MiB record, so only two uploads (this batch's and the next) ran
# at once. Memory stays bounded by the relay's byte budget, which counts the original size.
_ENVELOPE_WEIGHT = 1024


def _with_message_limit(cluster: ClusterConfig, min_bytes: int) -> ClusterConfig:
    """``cluster`` whose clients accept records up to ``min_bytes`` unless ``message.max.bytes`` is set.

    librdkafka refuses records over 1,000,000 bytes by default, less than the default 1 MiB
    threshold: without this, a record just under the threshold could not pass through.
    """
    if "message.max.bytes" in cluster.kafka or min_bytes <= 1_000_000:
        return cluster
    props: Mapping[str, str] = {**cluster.kafka, "message.max.bytes": str(min(min_bytes, 1_000_000_000))}
    return dataclasses.replace(cluster, kafka=props)


def build(config: LfsTargetConfig, context: TargetContext, metrics: RelayMetrics) -> KafkaTarget:
    """The ``type: lfs`` target: the Kafka target with the offload as its transform."""
    offload = Offload(config.lfs, config.kafka.retry, metrics)
    kafka_config = dataclasses.replace(
        config.kafka, cluster=_with_message_limit(config.kafka.cluster, config.lfs.threshold + _HEADROOM)
    )
    return kafka.build(kafka_config, context, metrics, offload)
