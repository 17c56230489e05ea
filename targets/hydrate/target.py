"""The hydrating target (``type: hydrate``): envelope records become the plain records they stand for.

It is the Kafka target (:class:`targets.kafka.KafkaTarget`: one transaction per batch, resume
positions in the positions topic within it) with :class:`Hydrate` as its transform
(:mod:`targets.kafka.transform`), mirroring the ``lfs`` target:

* as a run is written (``begin``, the relay's thread), each record is tested for an envelope
  (:func:`lfs.detect`: KafScale's prefix test for ``kfs_lfs``, a parse for the legacy
  ``lfs_version`` shape; a value over :data:`lfs.MAX_ENVELOPE_SIZE`, 64 KiB, is plain data and
  never parsed), checks it against the
  allow-list, the bounds on its claimed size (:mod:`targets.hydrate.limits`) and
  ``allow_unverified`` without any I/O, and starts its fetch at once on a pool of
  ``fetch_concurrency`` threads.
* as the transaction holding the run is produced (``outputs``, the sender's thread), each record
  is made once, in source order: an envelope record, once its fetch is done, becomes the plain record: the verified
  payload as value, the envelope record's key, timestamp, partition and headers, then each of
  ``original_headers`` that is not already there, then ``content-type`` from ``content_type``
  if no header of that name (in any case) is there. Non-envelope records pass unchanged. An
  envelope record of the ``lfs`` target keeps its record's headers, and has ``content_type``
  only where the record had that header, so nothing is added to it: the round trip gives each
  record back as it was.
* ``kfr-pos`` headers that arrive with a source record are the resume positions an earlier
  release of the relay that wrote the envelope topic kept in its records; they are dropped, or
  the one-time import of those headers (``target.import_header_positions``) could take the
  upstream relay's positions as this one's.

Per-record errors (``on_error``): an envelope that does not decode, or whose ``kfs_lfs`` version
is not 1 (``envelope_invalid``, the line names the version), a bucket or key outside
``allowed_buckets`` (``bucket_not_allowed``), a claimed size that could never be produced to the
target topic, is over ``max_object_size`` or would hold more than the payload window
(``too_large``, before any fetch), nothing to verify without ``allow_unverified``
(``unverified``: checksum ``none`` and no ``sha256``; KafScale's and our own ``none`` envelopes
carry ``sha256`` and are verified by it), a missing object (``missing_object``), and a size or
checksum mismatch (``size_mismatch``, ``checksum_mismatch``). Fields a later KafScale may add are
ignored, as KafScale's Go reader ignores them. ``fail`` (default) stops the relay with a
:class:`TargetError` naming the record, the object and the kind; the batch holding the record is
never committed, so no offset moves. ``dead-letter`` writes the envelope record unchanged to
``dead_letter_topic`` with a ``kfr-hydrate-error: <kind>: <sentence>`` header; ``passthrough``
writes it unchanged to its normal target topic with that header. Every error is counted by kind.
S3 being unavailable or throttling is not a record error: the fetch is retried forever with the
target's backoff (one warning per attempt) and the relay waits. Access denied or any other S3
failure stops the relay, naming the bucket and key.

Memory
  The relay's byte budget counts the envelope records it reads, not the payloads they stand
  for, so this target bounds payload memory itself, with a :class:`PayloadWindow` of
  ``max_in_flight`` bytes (the relay's budget):

  * a fetch starts, in source order, once what its payload will cost fits in the window, and
    reserves it until the transaction holding the record commits: three times its claimed
    ``size`` (twice without compression), for the record value, librdkafka's copy and the
    compressed batch, which all live until then. No envelope may claim more than the whole
    window (``max_in_flight / 3``, or ``/ 2``); a larger claim is refused before its fetch. The
    window is accounting only: the fetch appends the chunks it receives to a buffer that grows
    with them and becomes the record value without a copy, so memory follows the bytes
    received, never the bytes claimed;
  * each envelope record weighs its claimed payload size in a Kafka batch, so
    ``target.batch.max_bytes`` cuts batches by payload bytes (the relay is still told the
    envelope's own size on acknowledgement);
  * a batch holds at most ``max_in_flight / (2 * copies)`` of payload (``target.batch.max_bytes``
    if smaller), so that while one batch is being committed the window has room to fetch the
    next one. With a batch as large as the window, the next batch's fetches would wait for each
    commit, and the producer then for them.

  A fetch may always start when no other fetch is ahead of the producer, so a batch can always
  be completed, and fetching one record always overlaps producing the one before; the window is
  then exceeded by at most one batch.
  Peak payload memory is therefore about ``max(max_in_flight, 3 * (batch.max_bytes + largest
  record) + largest record)``. Fetching ahead is also bounded by the Kafka target's double
  buffering: at most one batch of payload is fetched while the previous one is produced, so a
  larger ``max_in_flight`` fetches further ahead and commits larger transactions.

Kafka limits
  Unless ``target.kafka`` sets ``message.max.bytes``, the producer accepts records up to
  ``max_object_size`` plus 1 MiB, or librdkafka's ceiling of 1,000,000,000 bytes when
  ``max_object_size`` is not set. At start-up (each ``high_watermarks``) the target reads each
  target topic's ``max.message.bytes``; a claim whose record (payload, key and headers) could not
  be produced under it or under the producer's ``message.max.bytes`` is refused through
  ``on_error`` before any fetch, instead of failing the produce on every restart. When the topic's
  config cannot be read (no ``DescribeConfigs`` permission) the producer's limit alone applies,
  and a warning says so.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lfs import Envelope, EnvelopeError, LfsError, ObjectTooLargeError, Resolver, StorageError, detect
from relay.message import Headers, Message
from relay.metrics import PREFIX, RelayMetrics
from relay.run import Run
from relay.settings import MIB, ClusterConfig
from relay.target import TargetError
from targets import kafka
from targets.context import TargetContext
from targets.hydrate.config import HydrateTargetConfig
from targets.hydrate.limits import ClaimLimits, producer_message_max, read_topic_limits, record_overhead
from targets.hydrate.window import Abandoned, PayloadWindow
from targets.kafka import KafkaTarget, KafkaTargetConfig, legacy

log = structlog.get_logger("kafka_lfs_relay.hydrate")

ERROR_HEADER: Final = "kfr-hydrate-error"
"""Header on a dead-lettered or passed-through envelope record: ``<kind>: <sentence>``."""

CONTENT_TYPE: Final = "content-type"

RECORD_ERROR_KINDS: Final = frozenset(
    {
        "envelope_invalid",
        "bucket_not_allowed",
        "too_large",
        "unverified",
        "missing_object",
        "size_mismatch",
        "checksum_mismatch",
    }
)
"""Error kinds ``on_error`` decides about; any other failure stops the relay."""

_MESSAGE_MAX_BYTES_CEILING: Final = 1_000_000_000
_LIBRDKAFKA_DEFAULT_MESSAGE_MAX: Final = 1_000_000

_Coordinates = tuple[str, int, int]  # source topic, partition, offset


# -- pure decisions ------------------------------------------------------------------------------


def strip_positions(headers: Sequence[tuple[str, bytes | None]]) -> tuple[tuple[str, bytes | None], ...]:
    """``headers`` without ``kfr-pos`` (an upstream relay's resume positions)."""
    return tuple(h for h in headers if h[0] != legacy.HEADER)


def restored_headers(
    headers: Sequence[tuple[str, bytes | None]], envelope: Envelope
) -> tuple[tuple[str, bytes | None], ...]:
    """The hydrated record's headers: ``headers``, then missing ``original_headers``, then content-type.

    An original header is added only if no header of that exact name is there; ``content-type``
    only if no header of that name in any letter case is there (after the original headers).
    """
    out = list(headers)
    names = {name for name, _ in out}
    for name, value in (envelope.original_headers or {}).items():
        if name not in names:
            out.append((name, value.encode("utf-8")))
            names.add(name)
    if envelope.content_type is not None and all(name.lower() != CONTENT_TYPE for name in names):
        out.append((CONTENT_TYPE, envelope.content_type.encode("utf-8")))
    return tuple(out)


def error_header(err: LfsError) -> tuple[str, bytes]:
    """The ``kfr-hydrate-error`` header for ``err``: ``<kind>: <sentence>`` (never payload bytes)."""
    return (ERROR_HEADER, f"{err.kind}: {err}".encode("utf-8", "replace"))


def _location(envelope: Envelope | None) -> str:
    if envelope is None:
        return "no valid envelope"
    return f"s3://{envelope.bucket}/{envelope.key}"[:300]


# -- metrics ---------------------------------------------------------------------------------------


class HydrateMetrics:
    """The hydrating target's metrics, registered next to the relay's own (``kafka_lfs_relay_hydrate_*``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = f"{PREFIX}_hydrate"
        self.records = Counter(
            f"{p}_records",
            "Records committed, by outcome: hydrated, plain (not an envelope), dead_letter or passthrough.",
            ["topic", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            f"{p}_errors", "Envelope records that could not be hydrated, by kind.", ["kind"], registry=registry
        )
        self.bytes_fetched = Counter(
            f"{p}_bytes_fetched", "Payload bytes fetched from S3 and verified.", registry=registry
        )
        self.fetch_seconds = Histogram(
            f"{p}_fetch_seconds",
            "Time to fetch and verify one payload.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.retries = Counter(
            f"{p}_fetch_retries", "S3 requests retried, by kind (unavailable, throttled).", ["kind"], registry=registry
        )
        self.in_flight_bytes = Gauge(
            f"{p}_in_flight_bytes",
            "Payload bytes held: fetching, fetched, or being produced (with copies).",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Envelope(Message):
    """An envelope record whose fetch has begun, as the Kafka target holds it until it is produced."""


def _as_envelope(msg: Message) -> Message:
    return _Envelope(
        msg.key, msg.value, msg.headers, msg.topic, msg.source_cluster, msg.source_topic,
        msg.source_partition, msg.source_offset, msg.timestamp_ms, msg.size,
    )  # fmt: skip


def _plain(msg: Message, value: bytes | None, headers: Headers, size: int) -> Message:
    """``msg`` as a plain :class:`Message` with ``value``, ``headers`` and ``size``."""
    return Message(
        msg.key, value, headers, msg.topic, msg.source_cluster, msg.source_topic,
        msg.source_partition, msg.source_offset, msg.timestamp_ms, size,
    )  # fmt: skip


@dataclass
class _Job:
    """One envelope record on its way: a known error, or a fetch."""

    envelope: Envelope | None
    error: LfsError | None = None
    claimed: int = 0
    ticket: tuple[int, int] = (0, 0)
    future: Future[bytes] | None = None


class Hydrate:
    """Writes envelope records as the plain records they stand for: the Kafka target's transform. See the
    module docstring."""

    def __init__(
        self,
        config: HydrateTargetConfig,
        kafka_settings: KafkaTargetConfig,
        context: TargetContext,
        metrics: RelayMetrics,
    ) -> None:
        self.hydrate = hydrate = config.hydrate
        self.metrics = HydrateMetrics(metrics.registry)
        copies = payload_copies(kafka_settings.cluster)
        self.limits = ClaimLimits(
            hydrate.max_object_size, producer_message_max(kafka_settings.cluster), context.max_in_flight, copies
        )
        self._cluster = kafka_settings.cluster
        self._target_topics = tuple(dict.fromkeys(t.target for t in context.topics))
        self._limits_logged: dict[str, int] | None = None
        self.resolver = Resolver(
            hydrate.s3,
            hydrate.policy,
            # A backstop: _begin refuses a claim over any of self.limits before it gets here.
            max_object_size=min(hydrate.max_object_size or _MESSAGE_MAX_BYTES_CEILING, self.limits.window.limit),
            allow_unverified=hydrate.allow_unverified,
            concurrency=hydrate.fetch_concurrency,
            part_size=hydrate.part_size,
            retries=None,
            backoff=(kafka_settings.retry.min, kafka_settings.retry.max),
            on_retry=self._on_retry,
        )
        self.window = PayloadWindow(context.max_in_flight, copies)
        self.metrics.in_flight_bytes.set_function(lambda: self.window.used)
        self._pool = ThreadPoolExecutor(hydrate.fetch_concurrency, thread_name_prefix="hydrate")
        self._lock = threading.Lock()
        self._jobs: dict[_Coordinates, _Job] = {}
        self._outcomes: dict[_Coordinates, str] = {}
        self._held: dict[_Coordinates, tuple[int, int]] = {}  # window grants released on commit
        self._closing = False

    # -- targets.kafka.Transform ---------------------------------------------------------------------
    @property
    def extra_topics(self) -> tuple[str, ...]:
        """The dead-letter topic, if there is one."""
        return (self.hydrate.dead_letter_topic,) if self.hydrate.dead_letter_topic else ()

    def start(self) -> None:
        """Nothing to start: fetches run on a pool made with the transform."""

    def routes_added(self, targets: Sequence[str]) -> None:
        """Read the limits of these target topics too, at the next :meth:`topics_ready`."""
        self._target_topics = tuple(dict.fromkeys((*self._target_topics, *targets)))

    def topics_ready(self) -> None:
        """The target topics exist from here on: their ``max.message.bytes`` is read, to bound claims."""
        self._read_topic_limits()

    def begin(self, run: Run) -> tuple[Run, list[int]]:
        """Start the fetch of each envelope record of ``run``; the run as kept (envelope records marked as
        such) and what each record weighs in a batch: the record plus its claimed payload."""
        kept: list[Message] = []
        weights: list[int] = []
        for message in run.messages():
            job = self._begin(message)
            if job is None:
                kept.append(message)
                weights.append(message.size)
                continue
            with self._lock:
                self._jobs[message.coordinates_key()] = job
            kept.append(_as_envelope(message))
            weights.append(message.size + job.claimed)
        return run.built(kept), weights

    def outputs(self, run: Run) -> Iterator[Message]:
        """Each record of ``run`` as it is produced: an envelope record hydrated once its payload is fetched."""
        for message in run.records:
            yield self._transform(message)

    def committed(self, runs: Sequence[Run]) -> None:
        """Release the payload window's grants of ``runs``' records and count what became of them."""
        with self._lock:
            keys = [(msg.source_topic, msg.coordinates_key()) for run in runs for msg in run.records]
            outcomes = [(topic, self._outcomes.pop(k, "plain")) for topic, k in keys]
            held = [grant for grant in (self._held.pop(k, None) for _, k in keys) if grant is not None]
        for generation, n in held:
            self.window.release(generation, n)
        for topic, outcome in outcomes:
            self.metrics.records.labels(topic=topic, outcome=outcome).inc()

    def drop(self) -> None:
        """Forget every record not yet committed (the relay re-reads those) and abandon their fetches."""
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            self._outcomes.clear()
            self._held.clear()
        self.window.reset()
        for job in jobs:
            if job.future is not None:
                job.future.cancel()

    def close(self) -> None:
        """Abandon every fetch and stop fetching; from here on no envelope record is ever produced."""
        with self._lock:
            self._closing = True
        self.drop()
        self.window.close()
        self.resolver.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _read_topic_limits(self) -> None:
        """Learn each target topic's ``max.message.bytes``; keep the producer's limit for those unreadable."""
        found, failed = read_topic_limits(self._cluster, self._target_topics, timeout=30)
        self.limits.set_topic_limits(found)
        for topic, reason in failed.items():
            log.warning(
                "cannot read max.message.bytes of a target topic; envelope claims are bounded by the producer's "
                "message.max.bytes only",
                topic=topic,
                error=reason,
            )
        bounds = {topic: self.limits.smallest(topic) for topic in self._target_topics}
        current = {topic: bound.limit for topic, bound in bounds.items()}
        if current != self._limits_logged:
            self._limits_logged = current
            for topic, bound in bounds.items():
                log.info("envelope claims bounded", topic=topic, max_claim=bound.limit, because=bound.why)

    def _begin(self, msg: Message) -> _Job | None:
        """The job for ``msg`` if it is an envelope record, else None; starts its fetch."""
        try:
            envelope = detect(msg.value)
        except EnvelopeError as exc:
            return _Job(None, exc)
        if envelope is None:
            return None
        try:
            self.resolver.policy.check(envelope.bucket, envelope.key)
            overhead = record_overhead(msg.key, restored_headers(strip_positions(msg.headers), envelope))
            bound = self.limits.refusal(msg.topic, envelope.size, overhead)
            if bound is not None:
                raise ObjectTooLargeError(envelope.bucket, envelope.key, envelope.size, bound.limit, bound.why)
            self.resolver.check(envelope)
        except LfsError as exc:
            return _Job(envelope, exc)
        job = _Job(envelope, claimed=envelope.size, ticket=self.window.ticket())
        job.future = self._pool.submit(self._fetch, job)
        return job

    def _fetch(self, job: _Job) -> bytes:
        """Runs in the pool: wait for room in the window, then fetch and verify."""
        assert job.envelope is not None
        self.window.acquire(job.ticket, job.claimed)
        started = time.monotonic()
        try:
            payload = self.resolver.fetch(job.envelope)
        except BaseException:
            self.window.release(job.ticket[0], job.claimed, ahead=True)
            raise
        self.metrics.fetch_seconds.observe(time.monotonic() - started)
        self.metrics.bytes_fetched.inc(len(payload))
        return payload

    def _on_retry(self, err: StorageError, attempt: int, delay: float) -> None:
        self.metrics.retries.labels(kind=err.kind).inc()
        log.warning(
            "S3 fetch failed; retrying",
            bucket=err.bucket,
            key=err.key[:300],
            kind=err.kind,
            error=err.detail,
            attempt=attempt,
            retry_in=round(delay, 2),
        )

    # -- the sender's side ----------------------------------------------------------------------
    def _transform(self, msg: Message) -> Message:
        """The record to produce for ``msg`` (the sender's thread, once per record, in order)."""
        coords = msg.coordinates_key()
        with self._lock:
            if self._closing:
                raise TargetError(f"record {msg.coordinates()} was not produced because the target is closing")
            job = self._jobs.pop(coords, None)
        if job is None and isinstance(msg, _Envelope):  # never produce an envelope as if it were plain data
            raise TargetError(f"the fetch for record {msg.coordinates()} was abandoned; the relay must restart")
        headers = strip_positions(msg.headers) if any(n == legacy.HEADER for n, _ in msg.headers) else msg.headers
        msg = _plain(msg, msg.value, headers, msg.size)
        if job is None:
            return msg
        if job.error is not None:
            return self._record_error(msg, job.envelope, job.error)
        assert job.future is not None and job.envelope is not None
        try:
            payload = job.future.result()
        except LfsError as exc:
            if exc.kind in RECORD_ERROR_KINDS:
                return self._record_error(msg, job.envelope, exc)
            self.metrics.errors.labels(kind=exc.kind).inc()
            raise TargetError(
                f"record {msg.coordinates()} cannot be hydrated from {_location(job.envelope)}: {exc.kind}: {exc}"
            ) from None
        except (Abandoned, CancelledError):
            raise TargetError(
                f"the fetch for record {msg.coordinates()} was abandoned because the target is closing"
            ) from None
        hydrated = _plain(msg, payload, restored_headers(msg.headers, job.envelope), msg.size + job.claimed)
        self.window.handed_over(job.ticket[0], job.claimed)
        with self._lock:
            self._outcomes[coords] = "hydrated"
            self._held[coords] = (job.ticket[0], job.claimed)
        return hydrated

    def _record_error(self, msg: Message, envelope: Envelope | None, err: LfsError) -> Message:
        """Apply ``on_error`` to an envelope record that cannot be hydrated."""
        self.metrics.errors.labels(kind=err.kind).inc()
        policy = self.hydrate.on_error
        where = _location(envelope)
        if policy == "fail":
            raise TargetError(
                f"record {msg.coordinates()} cannot be hydrated from {where}: {err.kind}: {err} "
                "(target.hydrate.on_error is fail)"
            )
        headers = (*msg.headers, error_header(err))
        if policy == "dead-letter":
            dlq = self.hydrate.dead_letter_topic
            assert dlq is not None
            log.warning(
                "envelope record sent to the dead-letter topic",
                record=msg.coordinates(),
                object=where,
                kind=err.kind,
                error=str(err),
                topic=dlq,
            )
            self._outcome(msg.coordinates_key(), "dead_letter")
            return dataclasses.replace(msg, topic=dlq, headers=headers)
        log.warning(
            "envelope record passed through unchanged",
            record=msg.coordinates(),
            object=where,
            kind=err.kind,
            error=str(err),
        )
        self._outcome(msg.coordinates_key(), "passthrough")
        return dataclasses.replace(msg, headers=headers)

    def _outcome(self, coords: _Coordinates, outcome: str) -> None:
        with self._lock:
            self._outcomes[coords] = outcome


def _with_message_limit(cluster: ClusterConfig, max_bytes: int) -> ClusterConfig:
    """``cluster`` whose producer accepts records of ``max_bytes`` unless ``message.max.bytes`` is set."""
    if "message.max.bytes" in cluster.kafka or max_bytes <= _LIBRDKAFKA_DEFAULT_MESSAGE_MAX:
        return cluster
    limit = min(max_bytes, _MESSAGE_MAX_BYTES_CEILING)
    return dataclasses.replace(cluster, kafka={**cluster.kafka, "message.max.bytes": str(limit)})


def payload_copies(cluster: ClusterConfig) -> int:
    """Copies of a payload alive while it is produced: ours, librdkafka's, and the compressed batch."""
    kafka = cluster.kafka
    compression = kafka.get("compression.type", kafka.get("compression.codec", "lz4"))
    return 2 if compression == "none" else 3


def kafka_config(config: HydrateTargetConfig, max_in_flight: int) -> KafkaTargetConfig:
    """The Kafka target's settings for hydration: records up to ``max_object_size`` (+1 MiB, or
    librdkafka's ceiling when it is not set) accepted, and ``batch.max_bytes`` at most half of what
    the payload window holds (see the module docstring)."""
    kafka, hydrate = config.kafka, config.hydrate
    batch = kafka.batch
    half_window = max(1, max_in_flight // (2 * payload_copies(kafka.cluster)))
    if batch.max_bytes > half_window:
        batch = dataclasses.replace(batch, max_bytes=half_window)
    cluster = _with_message_limit(kafka.cluster, (hydrate.max_object_size or _MESSAGE_MAX_BYTES_CEILING) + MIB)
    return dataclasses.replace(kafka, cluster=cluster, batch=batch)


def claim_report(config: HydrateTargetConfig, max_in_flight: int, topics: Sequence[str], timeout: float) -> list[str]:
    """For ``check``: one line per target topic saying how large a claim is accepted, and why.

    Reads each topic's ``max.message.bytes`` as the target does at start-up.
    """
    settings = kafka_config(config, max_in_flight)
    limits = ClaimLimits(
        config.hydrate.max_object_size,
        producer_message_max(settings.cluster),
        max_in_flight,
        payload_copies(settings.cluster),
    )
    found, failed = read_topic_limits(settings.cluster, topics, timeout)
    limits.set_topic_limits(found)
    policy = config.hydrate.on_error
    lines = []
    for topic in dict.fromkeys(topics):
        bound = limits.smallest(topic)
        claim = f"envelopes for target topic {topic!r} may claim at most {bound.limit} bytes ({bound.why})"
        if topic in failed:
            lines.append(f"warn    hydrate: cannot read max.message.bytes of {topic!r} ({failed[topic]}); {claim}")
        else:
            lines.append(f"ok      hydrate: {claim}; a larger claim is refused before any fetch (on_error: {policy})")
    return lines


def build(config: HydrateTargetConfig, context: TargetContext, metrics: RelayMetrics) -> KafkaTarget:
    """The ``type: hydrate`` target: the Kafka target with hydration as its transform."""
    kafka_settings = kafka_config(config, context.max_in_flight)
    return kafka.build(kafka_settings, context, metrics, Hydrate(config, kafka_settings, context, metrics))
