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
