"""Helpers for the hydrate tests: objects and hand-written envelopes in S3, full records in and out of Kafka."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster, S3Server
from lfs import Envelope, checksum
from tests.integration.harness import RelayProcess, relay_config, write_config
from tests.readback import read_to_end

Headers = tuple[tuple[str, bytes | None], ...]

# A base for record timestamps. It must be recent: the topics keep records 7 days, and the broker's retention
# check, every 5 minutes, deletes older ones whole, under a test that is about to read them back.
NOW = int(time.time() * 1000)


@dataclasses.dataclass(frozen=True)
class Rec:
    """A record as the tests compare it: everything but the offset."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: int = 0


def varied_records(count: int, start: int, partitions: int) -> list[Rec]:
    """Records ``start`` to ``start + count`` round-robin over ``partitions``, with null and empty keys and values
    and duplicate and null-valued headers, stamped from ``NOW``."""
    out = []
    for i in range(start, start + count):
        key = None if i % 9 == 0 else b"" if i % 9 == 1 else f"key-{i}".encode()
        value = None if i % 13 == 0 else b"" if i % 13 == 1 else f"value-{i}".encode()
        out.append(Rec(i % partitions, key, value, (("n", f"{i}".encode()), ("n", None)), NOW + i))
    return out


def unique_prefix() -> str:
    """A key prefix no other test uses in the shared bucket."""
    return f"hydrate-{uuid.uuid4().hex[:10]}"


def put_object(server: S3Server, key: str, data: bytes, bucket: str | None = None) -> None:
    """Store ``data`` at ``key`` with plain boto3 (independent of the lfs target)."""
    server.client().put_object(Bucket=bucket or server.bucket, Key=key, Body=data)


def envelope_for(
    server: S3Server,
    key: str,
    data: bytes,
    *,
    alg: str | None = None,
    store: bool = True,
    bucket: str | None = None,
    **fields: Any,
) -> Envelope:
    """Upload ``data`` (unless ``store`` is false) and describe it in a hand-built KafScale envelope.

    ``alg`` sets ``checksum_alg`` and ``checksum`` (md5, crc32, sha256, none); ``fields`` are
    further envelope fields (content_type, original_headers, size, sha256...).
    """
    if store:
        put_object(server, key, data, bucket)
    values: dict[str, Any] = {
        "bucket": bucket or server.bucket,
        "key": key,
        "size": len(data),
        "sha256": checksum(data, "sha256"),
    }
    if alg is not None:
        values["checksum_alg"] = alg
        if alg != "none":
            values["checksum"] = checksum(data, alg)
    values.update(fields)
    return Envelope(**values)


def hydrate_section(server: S3Server, **extra: Any) -> dict[str, Any]:
    """A ``target.hydrate`` section trusting the sandbox bucket, with ``extra`` merged in."""
    section: dict[str, Any] = {
        "allowed_buckets": [server.bucket],
        "s3": {
            "endpoint_url": server.endpoint_url,
            "region": server.region,
            "path_style": True,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
        },
    }
    section.update(extra)
    return section


def hydrate_relay(
    tmp_path: Path,
    cluster: KafkaCluster,
    source_topic: str,
    target_topic: str,
    server: S3Server,
    *args: str,
    name: str = "relay",
    target: dict[str, Any] | None = None,
    **hydrate: Any,
) -> RelayProcess:
    """A ``type: hydrate`` relay from ``source_topic`` to ``target_topic`` on the same cluster (not started)."""
    config = relay_config(
        [cluster],
        cluster,
        [{"source": source_topic, "target": target_topic}],
        name=f"{name}-{uuid.uuid4().hex[:8]}",
        target={
            "type": "hydrate",
            "hydrate": hydrate_section(server, **hydrate),
            "kafka": {"message.max.bytes": "100000000"},
            **(target or {}),
        },
    )
    return RelayProcess(write_config(tmp_path / f"{name}.yml", config), *args)


def produce_records(cluster: KafkaCluster, topic: str, records: Iterable[Rec], **conf: Any) -> None:
    """Produce every record with its partition, key, value, headers and timestamp, in order."""
    producer = FeedProducer(
        {
            **cluster.client_config(),
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 100_000_000,
            **conf,
        }
    )
    for rec in records:
        producer.send(
            topic,
            rec.value,
            rec.key,
            partition=rec.partition,
            headers=list(rec.headers) or None,
            timestamp=rec.timestamp,
        )
        producer.poll(0)
    producer.flush_all(120)


def read_records(cluster: KafkaCluster, topic: str, partitions: int, timeout: float = 120) -> list[Rec]:
    """Every committed record of ``topic``, partition by partition in log order."""
    found = read_to_end(cluster.client_config(), topic, partitions, batch=500, timeout=timeout)
    return [
        Rec(p, msg.key(), msg.value(), tuple(msg.headers() or ()), msg.timestamp()[1])
        for p in range(partitions)
        for msg in found[p]
    ]


def by_partition(records: Sequence[Rec]) -> dict[int, list[Rec]]:
    """Records grouped by partition, order kept."""
    out: dict[int, list[Rec]] = {}
    for rec in records:
        out.setdefault(rec.partition, []).append(rec)
    return out


def assert_records(expected: Sequence[Rec], actual: Sequence[Rec]) -> None:
    """Per partition, the same records in the same order; the first difference is named without payloads."""
    want, have = by_partition(expected), by_partition(actual)
    for partition in sorted(set(want) | set(have)):
        w, h = want.get(partition, []), have.get(partition, [])
        for i, (a, b) in enumerate(zip(w, h, strict=False)):
            if a != b:
                raise AssertionError(f"partition {partition}, record {i} differs: {describe(a)} != {describe(b)}")
        assert len(w) == len(h), f"partition {partition}: expected {len(w)} records, got {len(h)}"


def describe(rec: Rec) -> str:
    """A record without its value bytes: key, value length and digest, headers, timestamp."""
    value = "None" if rec.value is None else f"{len(rec.value)} bytes sha256={checksum(rec.value)[:12]}"
    return f"Rec(p={rec.partition}, key={rec.key!r}, value={value}, headers={rec.headers!r}, ts={rec.timestamp})"
