"""The scan behind ``lfs gc``: Kafka first (positions, then envelopes), then the bucket, then (maybe) deletes.

Order matters for safety (see :mod:`kafka_lfs_relay.lfsgc.census`): the positions are read before
the envelopes, and the envelopes before the bucket is listed, so that an object a transaction still
to commit will name is either at or past a position read before it committed (``in_flight``), or
was written after the listing began (not listed at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final

import structlog

from kafka_lfs_relay.config import RelayConfig
from kafka_lfs_relay.lfsgc.census import Census, Knowledge, classify
from kafka_lfs_relay.lfsgc.keys import KeyPattern
from kafka_lfs_relay.verify.plan import RangeReader
from lfs import EnvelopeError, decode_envelope, is_lfs_envelope
from lfs.s3 import describe, make_client
from relay.errors import RelayError
from relay.message import SourcePartition
from targets.kafka.groups import TargetGroups
from targets.kafka.positions import PositionsTopic
from targets.lfs import LfsTargetConfig

log = structlog.get_logger("kafka_lfs_relay.lfsgc")

_DELETE_BATCH: Final = 1000  # S3's DeleteObjects limit


class GcError(RelayError):
    """lfs gc cannot go on; the message names the cluster, topic, bucket or key."""

    code = "lfs_gc"


class _Every(Collection[SourcePartition]):
    """Every source partition: the positions of all of the relay's partitions, also those no longer configured."""

    def __contains__(self, item: object) -> bool:
        return True

    def __iter__(self) -> Iterator[SourcePartition]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True)
class Deleted:
    """What ``--delete`` did."""

    objects: int
    bytes: int
    errors: list[str]


class Scan:
    """One ``lfs gc`` pass over the lfs relay of ``config`` (which must be ``type: lfs``)."""

    def __init__(self, config: RelayConfig, grace: float, timeout: float = 60.0) -> None:
        settings = config.target.settings
        assert isinstance(settings, LfsTargetConfig)
        self.config = config
        self.kafka = settings.kafka
        self.lfs = settings.lfs
        self.grace = grace
        self.timeout = timeout
        self.pattern = KeyPattern(self.lfs.key_template, self.lfs.s3.prefix, self.lfs.relay)
        self._client: Any = make_client(self.lfs.s3)

    @property
    def bucket(self) -> str:
        return self.lfs.bucket

    def knowledge(self) -> Knowledge:
        """The relay's committed positions, then every key an envelope in its target topics names."""
        positions = PositionsTopic(
            self.kafka.cluster, self.kafka.positions_topic_for(self.config.name), self.config.name,
            timeout=self.kafka.transaction_timeout + 30,
        ).read(_Every())  # fmt: skip
        routes = {r.target: r.source for r in self.config.topics}
        live: set[str] = set()
        oldest: dict[SourcePartition, int] = {}
        ranges = TargetGroups(self.kafka.cluster, self.timeout).log_range(
            {(t, p) for t in routes for p in range(self._partitions(t))}
        )
        # A relay that died inside a transaction holds committed records back until the broker aborts it.
        reader = RangeReader(self.kafka.cluster, stall=self.kafka.transaction_timeout + 30)
        try:
            for (topic, partition), (start, end) in sorted(ranges.items()):
                for msg in reader.read(topic, partition, start, end):
                    key = self._named(msg.value())
                    if key is None:
                        continue
                    live.add(key)
                    parts = self.pattern.parse(key)
                    if parts is not None:
                        source = parts.topic or routes.get(parts.target_topic or "", "")
                        sp = SourcePartition(source, parts.partition)
                        oldest[sp] = min(oldest.get(sp, parts.offset), parts.offset)
        finally:
            reader.close()
        return Knowledge(
            frozenset(live),
            {sp: entry.next for sp, entry in positions.items()},
            oldest,
            routes,
            frozenset(routes.values()),
        )

    def _named(self, value: bytes | None) -> str | None:
        """The key of this relay's bucket an envelope value names, if it is one."""
        if not is_lfs_envelope(value):
            return None
        assert value is not None
        try:
            envelope = decode_envelope(value)
        except EnvelopeError:
            return None
        return envelope.key if envelope.bucket == self.bucket else None

    def _partitions(self, topic: str) -> int:
        md = self._admin().list_topics(topic, timeout=self.timeout)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            return 0  # not created yet: it holds no envelope
        return len(meta.partitions)

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        from relay.logs import librdkafka_logger

        conf: dict[str, Any] = {**self.kafka.cluster.client_config(), "logger": librdkafka_logger()}
        return AdminClient(conf)

    def census(self, known: Knowledge, on_object: Callable[[str, int, str], None] | None = None) -> Census:
        """List every object under the relay's keys and classify it."""
        census = Census()
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.pattern.list_prefix):
                now = _server_time(page)
                for obj in page.get("Contents", []):
                    key, size = str(obj["Key"]), int(obj.get("Size", 0))
                    age = (now - obj["LastModified"]).total_seconds()
                    state = classify(self.pattern.parse(key), key, age, self.grace, known)
                    census.add(key, size, state)
                    if on_object is not None:
                        on_object(key, size, state)
        except Exception as exc:
            if isinstance(exc, RelayError):
                raise
            raise GcError(
                f"listing s3://{self.bucket}/{self.pattern.list_prefix}: {describe(exc)}; check target.lfs.s3"
            ) from None
        return census

    def delete(self, census: Census) -> Deleted:
        """Delete every deletable object of ``census``, a thousand keys per request."""
        done, done_bytes, errors = 0, 0, []
        items = census.deletable
        for i in range(0, len(items), _DELETE_BATCH):
            batch = items[i : i + _DELETE_BATCH]
            sizes = {key: size for key, size, _ in batch}
            try:
                resp = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in sizes], "Quiet": True}
                )
            except Exception as exc:  # the whole request failed: its keys stay, named in the error
                errors.append(f"DeleteObjects of {len(batch)} keys from s3://{self.bucket}: {describe(exc)}")
                continue
            failed = {str(e.get("Key")): f"{e.get('Code')}: {e.get('Message')}" for e in resp.get("Errors", [])}
            errors += [f"s3://{self.bucket}/{key}: {why}" for key, why in failed.items()]
            for key, size in sizes.items():
                if key not in failed:
                    done += 1
                    done_bytes += size
        return Deleted(done, done_bytes, errors)


def _server_time(page: dict[str, Any]) -> datetime:
    """The S3 server's time from a response's ``Date`` header (ours if it has none): ages are measured
    on the clock that stamped ``LastModified``."""
    header = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if header:
        try:
            return parsedate_to_datetime(str(header))
        except (TypeError, ValueError):
            pass
    return datetime.fromtimestamp(time.time(), timezone.utc)
