"""Round trip: source -> lfs relay -> envelope topic -> hydrate relay -> plain topic, byte for byte."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import detect
from tests.conftest import TopicFactory
from tests.integration.harness import RelayProcess, relay_config, write_config
from tests.integration.hydrate_support import Rec, assert_records, hydrate_section, produce_records, read_records

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
BIG_TOPIC = {"max.message.bytes": str(100 * MIB)}
SIZES = [64 * MIB, 20 * MIB, 8 * MIB, 8 * MIB + 1, 3 * MIB, MIB + 1, MIB, 500 * 1024, 1024, 1, 0]


def test_lfs_then_hydrate_gives_back_every_source_record_byte_for_byte(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """Records up to 64 MiB offloaded by the lfs relay and hydrated by the hydrate relay equal the source, in order."""
    source = topic_factory(kafka_cluster, partitions=3, config=BIG_TOPIC)
    envelopes = topic_factory(kafka_cluster, partitions=3, config=BIG_TOPIC)
    plain = topic_factory(kafka_cluster, partitions=3, config=BIG_TOPIC)
    now = int(time.time() * 1000)
    records: list[Rec] = []
    for i, size in enumerate(SIZES * 2):
        # Every record carries content-type: for a record without one the lfs target writes its
        # content_type_default into the envelope, and hydration then adds it as a header, as the
        # hydrate target must ("content_type becomes a content-type header if none is there").
        headers: tuple[tuple[str, bytes | None], ...] = (
            ("traceparent", f"00-{i:032x}-01".encode()),
            ("content-type", b"application/x-blob" if i % 2 else b"text/plain"),
            ("binary", bytes([0, 255, i % 256])),
            ("binary", None),
        )
        records.append(Rec(i % 3, f"key-{i}".encode(), os.urandom(size), headers, now + i))
    records.append(Rec(0, b"tombstone", None, (("content-type", b"text/plain"),), now + 100))
    produce_records(kafka_cluster, source, records, **{"compression.type": "none"})

    prefix = f"roundtrip-{uuid.uuid4().hex[:8]}"
    connection = hydrate_section(s3_server)["s3"]
    offload = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": source, "target": envelopes}],
        name=f"offload-{prefix}",
        target={
            "type": "lfs",
            "lfs": {"threshold": "1MiB", "s3": {**connection, "bucket": s3_server.bucket, "prefix": prefix}},
        },
    )
    hydrate = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": envelopes, "target": plain}],
        name=f"hydrate-{prefix}",
        target={
            "type": "hydrate",
            "hydrate": hydrate_section(
                s3_server, allowed_buckets=[{"bucket": s3_server.bucket, "prefixes": [f"{prefix}/"]}]
            ),
        },
    )
    for name, config in (("offload", offload), ("hydrate", hydrate)):
        relay = RelayProcess(write_config(tmp_path / f"{name}.yml", config), "--stop-at-end")
        assert relay.start().wait(300) == 0, relay.log_tail()

    offloaded = read_records(kafka_cluster, envelopes, 3)
    assert sum(detect(r.value) is not None for r in offloaded) == 2 * sum(s > MIB for s in SIZES)
    assert_records(records, read_records(kafka_cluster, plain, 3))


def test_records_without_content_type_come_back_from_lfs_and_hydration_exactly_as_they_were(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """Offloaded and inline records, with and without content-type, null and empty keys and values,
    duplicate and null-valued headers and out-of-order timestamps, equal their source after lfs then hydrate."""
    source = topic_factory(kafka_cluster, partitions=3)
    envelopes = topic_factory(kafka_cluster, partitions=3)
    plain = topic_factory(kafka_cluster, partitions=3)
    now = int(time.time() * 1000)
    header_sets: list[tuple[tuple[str, bytes | None], ...]] = [
        (),
        (("trace", b"t"), ("trace", b"t"), ("dup", None), ("dup", b"")),
        (("Content-Type", b"text/csv"), ("x", None)),
        (("content-type", None),),
        (("content-type", b""), ("traceparent", b"00-ab-01")),
        (("a", b"1"), ("b", None), ("a", b"2")),
    ]
    keys: list[bytes | None] = [None, b"", b"k"]
    records: list[Rec] = []
    for i in range(60):
        value: bytes | None
        if i % 10 == 3:
            value = None
        elif i % 10 == 7:
            value = b""
        else:
            value = os.urandom(2048 if i % 2 else 100)  # over the 1 KiB threshold: offloaded
        key = keys[i % 3] if i % 5 else f"key-{i}".encode()
        # Timestamps out of order within a partition, up to an hour back.
        records.append(Rec(i % 3, key, value, header_sets[i % len(header_sets)], now - (i * 7919) % 3_600_000))
    produce_records(kafka_cluster, source, records)

    prefix = f"faithful-{uuid.uuid4().hex[:8]}"
    connection = hydrate_section(s3_server)["s3"]
    offload = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": source, "target": envelopes}],
        name=f"offload-{prefix}",
        target={
            "type": "lfs",
            "lfs": {"threshold": "1KiB", "s3": {**connection, "bucket": s3_server.bucket, "prefix": prefix}},
        },
    )
    hydrate = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": envelopes, "target": plain}],
        name=f"hydrate-{prefix}",
        target={
            "type": "hydrate",
            "hydrate": hydrate_section(
                s3_server, allowed_buckets=[{"bucket": s3_server.bucket, "prefixes": [f"{prefix}/"]}]
            ),
        },
    )
    for name, config in (("offload", offload), ("hydrate", hydrate)):
        relay = RelayProcess(write_config(tmp_path / f"{name}.yml", config), "--stop-at-end")
        assert relay.start().wait(120) == 0, relay.log_tail()

    offloaded = read_records(kafka_cluster, envelopes, 3)
    assert sum(detect(r.value) is not None for r in offloaded) == sum(
        1 for r in records if r.value is not None and len(r.value) > 1024
    )
    assert_records(records, read_records(kafka_cluster, plain, 3))
