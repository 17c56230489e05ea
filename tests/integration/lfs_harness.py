"""Helpers for the offloading-target tests: big records in, envelopes and objects out, compared."""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from lfs import decode_envelope, is_lfs_envelope
from tests.conftest import create_topic
from tests.integration.harness import relay_config, write_config
from tests.readback import read_to_end

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
MAX_MESSAGE = 100 * MIB
Headers = list[tuple[str, bytes]]


@dataclass
class Source:
    """One produced record, remembered by digest (values of many MiB are not kept in memory)."""

    partition: int
    key: bytes
    size: int
    sha256: str
    headers: Headers = field(default_factory=list)
    small_value: bytes | None = None  # kept for records under 1 MiB, to compare byte for byte
    timestamp_ms: int = 0


@dataclass
class Target:
    """One committed record of a target topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


def payload(seed: int, size: int) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(size)


def big_topic(cluster: KafkaCluster, partitions: int, name: str | None = None) -> str:
    """A topic that takes records up to 100 MiB."""
    return create_topic(
        cluster, name or f"lfs-{uuid.uuid4().hex[:10]}", partitions, {"max.message.bytes": str(MAX_MESSAGE)}
    )


def topic_pair(cluster: KafkaCluster, partitions: int) -> tuple[str, str]:
    """A source topic and its target topic ``<source>-out``, both taking records up to 100 MiB.

    The target topic is created here rather than by the relay, which would create it with the
    broker's default record size limit.
    """
    src = big_topic(cluster, partitions)
    return src, big_topic(cluster, partitions, name=f"{src}-out")


def produce_sized(
    cluster: KafkaCluster,
    topic: str,
    plan: list[tuple[int, int]],
    headers: list[Headers] | None = None,
    seed: int = 1,
) -> list[Source]:
    """Produce one record per ``(partition, size)`` of ``plan``; returns what was produced, in order."""
    producer = FeedProducer(
        {
            **cluster.client_config(),
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": MAX_MESSAGE,
            "queue.buffering.max.kbytes": 512 * 1024,
            # One request of big records at a time: the sandbox broker has a 512 MiB heap.
            "max.in.flight.requests.per.connection": 1,
        }
    )
    out: list[Source] = []
    # Explicit timestamps, to check they are kept, but recent ones: records older than the topic's
    # retention (7 days) are deleted by the broker's next retention check, before the relay reads them.
    base_ms = int(time.time() * 1000) - 60_000
    for i, (partition, size) in enumerate(plan):
        value = payload(seed * 1_000_003 + i, size)
        hs = list(headers[i]) if headers is not None else []
        key = f"key-{seed}-{i}".encode()
        timestamp = base_ms + i
        producer.send(topic, value, key, partition=partition, headers=hs or None, timestamp=timestamp)
        producer.poll(0)
        small = value if size < MIB else None
        out.append(Source(partition, key, size, hashlib.sha256(value).hexdigest(), hs, small, timestamp))
        del value
    producer.flush_all(120)
    return out


def read_target(cluster: KafkaCluster, topic: str, partitions: int, timeout: float = 120) -> dict[int, list[Target]]:
    """Every committed record of ``topic`` per partition, with headers, read to the current end."""
    found = read_to_end(cluster.client_config(), topic, partitions, timeout=timeout)
    return {
        p: [
            Target(p, msg.offset() or 0, msg.key(), msg.value(), [(k, v or b"") for k, v in (msg.headers() or [])],
                   msg.timestamp()[1])
            for msg in msgs
        ]
        for p, msgs in found.items()
    }  # fmt: skip


def count_target(cluster: KafkaCluster, topic: str, partitions: int) -> int:
    """Committed records in ``topic``."""
    return sum(len(v) for v in read_target(cluster, topic, partitions).values())


def object_bytes(client: S3Client, bucket: str, key: str) -> bytes:
    """The whole object."""
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def list_keys(client: S3Client, bucket: str, prefix: str) -> set[str]:
    """Every object key under ``prefix``."""
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def incomplete_uploads(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """Keys of incomplete multipart uploads under ``prefix``."""
    listing = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in listing.get("Uploads", [])]


def assert_mirrored(
    sources: list[Source],
    target: dict[int, list[Target]],
    client: S3Client,
    bucket: str,
    threshold: int,
) -> set[str]:
    """Per partition, exactly once and in order: small records unchanged, large ones as envelopes whose
    object is the source value. Returns the object keys the envelopes name."""
    keys: set[str] = set()
    by_partition: dict[int, list[Source]] = {}
    for src in sources:
        by_partition.setdefault(src.partition, []).append(src)
    for partition, want in by_partition.items():
        have = target.get(partition, [])
        assert len(have) == len(want), f"partition {partition}: expected {len(want)} records, got {len(have)}"
        for i, (src, rec) in enumerate(zip(want, have, strict=True)):
            where = f"partition {partition} index {i} ({src.size} bytes)"
            assert rec.key == src.key, f"{where}: key {rec.key!r} != {src.key!r}"
            assert rec.headers == src.headers, f"{where}: headers changed"
            assert rec.timestamp_ms == src.timestamp_ms, f"{where}: timestamp changed"
            assert rec.value is not None
            if src.size <= threshold:
                assert not is_lfs_envelope(rec.value), f"{where}: a small record was offloaded"
                assert src.small_value is None or rec.value == src.small_value, f"{where}: value changed"
                assert hashlib.sha256(rec.value).hexdigest() == src.sha256, f"{where}: value changed"
                continue
            assert is_lfs_envelope(rec.value), f"{where}: a large record was not offloaded"
            env = decode_envelope(rec.value)
            assert env.bucket == bucket
            assert env.size == src.size and env.sha256 == src.sha256, f"{where}: envelope does not describe the value"
            body = object_bytes(client, bucket, env.key)
            assert len(body) == env.size, f"{where}: object has {len(body)} bytes, envelope says {env.size}"
            assert hashlib.sha256(body).hexdigest() == env.sha256, f"{where}: object does not hash to the envelope"
            assert env.key not in keys, f"{where}: two envelopes name object {env.key}"
            keys.add(env.key)
    return keys


def envelope_keys(target: dict[int, list[Target]]) -> set[str]:
    """Object keys named by the envelopes among ``target``'s records."""
    return {decode_envelope(r.value).key for recs in target.values() for r in recs if is_lfs_envelope(r.value)}


def s3_section(server: S3Server, prefix: str, **extra: Any) -> dict[str, Any]:
    """A ``target.lfs.s3`` section for ``server``."""
    info = server.info()
    return {
        "endpoint_url": info["endpoint_url"],
        "region": info["region"],
        "bucket": info["bucket"],
        "prefix": prefix,
        "path_style": True,
        "access_key_id": info["access_key_id"],
        "secret_access_key": info["secret_access_key"],
        **extra,
    }


def lfs_config(
    path: Path,
    cluster: KafkaCluster,
    source: str,
    target: str,
    lfs: dict[str, Any],
    metrics_port: int | None = None,
    retry_max: str = "2s",
    max_in_flight: str | None = None,
    **target_extra: Any,
) -> Path:
    """Write a relay config mirroring ``source`` to ``target`` on ``cluster`` through the lfs target."""
    extra: dict[str, Any] = {
        "name": f"lfs-{uuid.uuid4().hex[:8]}",
        "target": {
            "type": "lfs",
            "lfs": lfs,
            "retry": {"backoff": {"min": "100ms", "max": retry_max}},
            **target_extra,
        },
    }
    if metrics_port is not None:
        extra["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    if max_in_flight is not None:
        extra["max_in_flight"] = max_in_flight
    config = relay_config([cluster], cluster, [{"source": source, "target": target}], **extra)
    return write_config(path, config)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """The relay's metrics as ``{name{labels}: value}``; empty if the endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            out[match.group(1)] = float(match.group(2))
    return out


def metric(values: dict[str, float], name: str) -> float:
    """Sum of every series of ``name`` (all label values)."""
    return sum(v for k, v in values.items() if k == name or k.startswith(name + "{"))


def envelope_fields(value: bytes) -> list[str]:
    """The JSON field names of an envelope, in the order they were written."""
    objects: list[list[str]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append([name for name, _ in items])  # inner objects first, the envelope itself last
        return dict(items)

    json.loads(value, object_pairs_hook=hook)
    return objects[-1]
