"""The offloading target (type: lfs) against real Kafka and real SeaweedFS: mirror, envelopes, record errors."""

from __future__ import annotations

import hashlib
import re
import uuid
import zlib
from pathlib import Path

import pytest
import yaml

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from lfs import Envelope, decode_envelope, is_lfs_envelope
from tests.integration.harness import RelayProcess, wait_for
from tests.integration.lfs_harness import (
    MIB,
    assert_mirrored,
    big_topic,
    count_target,
    envelope_fields,
    free_port,
    incomplete_uploads,
    lfs_config,
    list_keys,
    metric,
    object_bytes,
    payload,
    produce_sized,
    read_target,
    s3_section,
    scrape,
    topic_pair,
)

pytestmark = pytest.mark.integration

# KafScale's kfs_lfs v1 fields, in the order its writer emits them.
KAFSCALE_FIELDS = [
    "kfs_lfs", "bucket", "key", "size", "sha256", "checksum", "checksum_alg", "content_type",
    "original_headers", "created_at", "proxy_id",
]  # fmt: skip


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def test_mixed_sizes_mirror_with_large_values_offloaded(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """Records of 100 B to 64 MiB arrive once, in order: small ones unchanged, large ones as envelopes of objects."""
    # A record right at the 1 MiB threshold passes through, and with its key and headers it is over
    # Kafka's default 1 MB limit: the target topic takes it (topic_pair), as in any real deployment.
    src, _ = topic_pair(kafka_cluster, 2)
    sizes = [100, 5000, 300_000, MIB, MIB + 1, 3 * MIB, 100, 8 * MIB, 8 * MIB + 1, 20 * MIB, 64 * MIB, 2 * MIB]
    sizes.append(64 * MIB)
    plan = [(i % 2, size) for i, size in enumerate(sizes)]
    headers = [[("content-type", b"application/x-test"), ("n", str(i).encode())] for i in range(len(plan))]
    sources = produce_sized(kafka_cluster, src, plan, headers)
    prefix = _prefix()
    lfs = {"s3": s3_section(s3_server, prefix, tags={"retention": "short"})}
    relay = RelayProcess(lfs_config(tmp_path / "relay.yml", kafka_cluster, src, f"{src}-out", lfs), "--stop-at-end")
    assert relay.start().wait(240) == 0, relay.log_tail()

    client = s3_server.client()
    target = read_target(kafka_cluster, f"{src}-out", 2)
    keys = assert_mirrored(sources, target, client, s3_server.bucket, threshold=MIB)
    assert len(keys) == sum(1 for s in sizes if s > MIB)
    assert list_keys(client, s3_server.bucket, prefix) == keys
    some = sorted(keys)[0]
    name = yaml.safe_load(relay.config_path.read_text(encoding="utf-8"))["name"]
    assert re.fullmatch(rf"{prefix}/{name}/{src}/[01]/[0-9]+-[0-9a-f]{{64}}", some), some
    assert some.endswith(hashlib.sha256(object_bytes(client, s3_server.bucket, some)).hexdigest())
    tags = client.get_object_tagging(Bucket=s3_server.bucket, Key=some)["TagSet"]
    assert tags == [{"Key": "retention", "Value": "short"}]
    assert client.head_object(Bucket=s3_server.bucket, Key=some)["ContentType"] == "application/x-test"


def test_envelopes_are_byte_compatible_with_kafscale(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """Envelopes start with kfs_lfs, hold only KafScale's fields in its order, with the right checksums and headers."""
    src, _ = topic_pair(kafka_cluster, 1)
    existing = Envelope(bucket="elsewhere", key="k", size=1, sha256="0" * 64).encode()
    plan = [(0, 1000)] * 5
    headers: list[list[tuple[str, bytes]]] = [
        [("content-type", b"text/plain"), ("traceparent", b"00-abc-def-01"), ("x-private", b"secret")],
        [("LFS_BLOB_ALG", b"md5")],
        [("LFS_BLOB_ALG", b"crc32")],
        [("LFS_BLOB_ALG", b"none")],
        [],
    ]
    sources = produce_sized(kafka_cluster, src, plan, headers)
    # An LFS_BLOB record whose header holds the right checksum, and one that already is an envelope.
    producer = FeedProducer(kafka_cluster.client_config())
    blob = b"exact payload"
    producer.produce(src, blob, b"blob", partition=0, headers=[("LFS_BLOB", hashlib.sha256(blob).hexdigest().encode())])
    producer.produce(src, existing, b"envelope", partition=0, headers=[("LFS_BLOB", b"")])
    producer.produce(src, None, b"tombstone", partition=0)
    producer.flush_all(30)

    prefix = _prefix()
    lfs = {"always_offload_topics": [src], "threshold": "1MiB", "s3": s3_section(s3_server, prefix)}
    config = lfs_config(tmp_path / "relay.yml", kafka_cluster, src, f"{src}-out", lfs)
    relay = RelayProcess(config, "--stop-at-end")
    assert relay.start().wait(120) == 0, relay.log_tail()
    name = re.search(r"name: (lfs-[0-9a-f]+)", config.read_text())
    assert name is not None

    records = read_target(kafka_cluster, f"{src}-out", 1)[0]
    assert [r.key for r in records] == [s.key for s in sources] + [b"blob", b"envelope", b"tombstone"]
    client = s3_server.client()
    envelopes = []
    for rec, src_rec in zip(records[:5], sources, strict=True):
        assert rec.value is not None
        assert rec.value.startswith(b'{"kfs_lfs":1,"bucket":'), rec.value[:40]
        assert b'"kfs_lfs"' in rec.value[:50] and is_lfs_envelope(rec.value)
        fields = envelope_fields(rec.value)
        assert fields == [f for f in KAFSCALE_FIELDS if f in fields], fields
        env = decode_envelope(rec.value)
        body = object_bytes(client, s3_server.bucket, env.key)
        assert hashlib.sha256(body).hexdigest() == env.sha256 == src_rec.sha256
        assert env.created_at is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", env.created_at)
        assert env.proxy_id == f"kafka-lfs-relay/{name.group(1)}"
        assert rec.headers == src_rec.headers  # the relay adds no header of its own
        envelopes.append((env, body))

    (e_sha, _), (e_md5, b_md5), (e_crc, b_crc), (e_none, _), (e_plain, _) = envelopes
    assert e_sha.content_type == "text/plain"
    assert dict(e_sha.original_headers or {}) == {"content-type": "text/plain", "traceparent": "00-abc-def-01"}
    assert (e_sha.checksum, e_sha.checksum_alg) == (None, None)
    assert (e_md5.checksum_alg, e_md5.checksum) == ("md5", hashlib.md5(b_md5).hexdigest())
    assert (e_crc.checksum_alg, e_crc.checksum) == ("crc32", f"{zlib.crc32(b_crc):08x}")
    assert (e_none.checksum_alg, e_none.checksum) == ("none", None)
    # A record without content-type: its envelope says none (so hydration adds none), its object has the default.
    assert e_plain.content_type is None and e_plain.original_headers is None
    stored = s3_server.client().head_object(Bucket=e_plain.bucket, Key=e_plain.key)
    assert stored["ContentType"] == "application/octet-stream"
    assert records[4].value is not None and b'"checksum' not in records[4].value

    blob_rec, env_rec, tomb_rec = records[5:]
    assert blob_rec.value is not None
    assert object_bytes(client, s3_server.bucket, decode_envelope(blob_rec.value).key) == blob
    assert env_rec.value == existing, "an envelope was wrapped in another envelope"
    assert tomb_rec.value is None, "a tombstone was offloaded"


def test_checksum_mismatch_and_oversize_records_are_dead_lettered(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """Records with a wrong LFS_BLOB checksum or too large go to the dead-letter topic, keep no object, are counted."""
    src, _ = topic_pair(kafka_cluster, 1)
    dlq = big_topic(kafka_cluster, 1, name=f"{src}-dlq")
    # offset 0: 1 byte, passes; 1: right checksum, offloaded; 2: wrong sha256 (single PUT); 3: wrong md5
    # (multipart); 4: over max_object_size; 5: 100 bytes, passes.
    produced = produce_sized(kafka_cluster, src, [(0, 1)], seed=7)
    right = hashlib.sha256(payload(8 * 1_000_003, 2 * MIB)).hexdigest().encode()
    plan = [(0, 2 * MIB), (0, 2 * MIB), (0, 12 * MIB), (0, 20 * MIB), (0, 100)]
    headers = [
        [("LFS_BLOB", right)],
        [("LFS_BLOB", b"0" * 64)],
        [("LFS_BLOB", b"0" * 32), ("LFS_BLOB_ALG", b"md5")],
        [],
        [],
    ]
    produced += produce_sized(kafka_cluster, src, plan, headers, seed=8)
    prefix = _prefix()
    port = free_port()
    lfs = {
        "on_record_error": "dead-letter",
        "dead_letter_topic": dlq,
        "part_size": "5MiB",
        "s3": s3_section(s3_server, prefix, max_object_size="16MiB"),
    }
    config = lfs_config(
        tmp_path / "relay.yml", kafka_cluster, src, f"{src}-out", lfs, metrics_port=port,
        kafka={"message.max.bytes": str(100 * MIB)},
    )  # fmt: skip
    relay = RelayProcess(config).start()
    try:
        wait_for("three records on the target", lambda: count_target(kafka_cluster, f"{src}-out", 1) >= 3, 120, relay)
        wait_for("three records dead-lettered", lambda: count_target(kafka_cluster, dlq, 1) >= 3, 60, relay)
        wait_for("metrics", lambda: metric(scrape(port), "kafka_lfs_relay_lfs_records_dead_lettered_total") >= 3, 30)
        values = scrape(port)
    finally:
        assert relay.terminate() == 0, relay.log_tail()

    assert metric(values, "kafka_lfs_relay_lfs_records_offloaded_total") == 1
    assert metric(values, "kafka_lfs_relay_lfs_records_passed_through_total") == 2
    assert metric(values, "kafka_lfs_relay_lfs_checksum_mismatches_total") == 2
    dead = "kafka_lfs_relay_lfs_records_dead_lettered_total"
    assert values[f'{dead}{{reason="checksum_mismatch",topic="{src}"}}'] == 2
    assert values[f'{dead}{{reason="too_large",topic="{src}"}}'] == 1
    assert metric(values, "kafka_lfs_relay_lfs_bytes_uploaded_total") >= 2 * MIB
    assert metric(values, "kafka_lfs_relay_lfs_upload_latency_seconds_count") >= 1

    target = read_target(kafka_cluster, f"{src}-out", 1)[0]
    assert [r.key for r in target] == [produced[i].key for i in (0, 1, 5)]
    assert target[1].value is not None
    env = decode_envelope(target[1].value)
    dead = read_target(kafka_cluster, dlq, 1)[0]
    assert [r.key for r in dead] == [produced[i].key for i in (2, 3, 4)]
    for rec, src_rec in zip(dead, produced[2:5], strict=True):
        assert rec.value is not None and hashlib.sha256(rec.value).hexdigest() == src_rec.sha256
        reason = dict(rec.headers)["kfr-lfs-error"].decode()
        assert ("LFS_BLOB header expects" in reason) or ("max_object_size" in reason), reason
    client = s3_server.client()
    assert list_keys(client, s3_server.bucket, prefix) == {env.key}, "a rejected record left an object behind"
    assert incomplete_uploads(client, s3_server.bucket, prefix) == []


def test_checksum_mismatch_with_fail_policy_stops_the_relay(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """With on_record_error: fail, a wrong LFS_BLOB checksum stops the relay with a clear error and keeps no object."""
    src, _ = topic_pair(kafka_cluster, 1)
    produced = produce_sized(kafka_cluster, src, [(0, 100), (0, 3 * MIB)], [[], [("LFS_BLOB", b"ab" * 32)]])
    prefix = _prefix()
    lfs = {"s3": s3_section(s3_server, prefix)}
    relay = RelayProcess(lfs_config(tmp_path / "relay.yml", kafka_cluster, src, f"{src}-out", lfs), "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    log = relay.log_text()
    assert f"record {kafka_cluster.name}/{src}/0@1: payload sha256 is" in log, relay.log_tail()
    assert "LFS_BLOB header expects 'abab" in log and "on_record_error is fail" in log, relay.log_tail()
    keys = [r.key for r in read_target(kafka_cluster, f"{src}-out", 1)[0]]
    assert produced[1].key not in keys and len(keys) <= 1
    assert list_keys(s3_server.client(), s3_server.bucket, prefix) == set()


def test_access_denied_stops_with_a_clear_error(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server
) -> None:
    """Credentials S3 refuses stop the relay at its start-up probe with one line naming the bucket, the key and
    the settings to check, never the secret; nothing is committed."""
    src, _ = topic_pair(kafka_cluster, 1)
    produce_sized(kafka_cluster, src, [(0, 2 * MIB)])
    prefix = _prefix()
    s3 = s3_section(s3_server, prefix)
    s3["secret_access_key"] = s3["secret_access_key"] + "-wrong"
    relay = RelayProcess(
        lfs_config(tmp_path / "relay.yml", kafka_cluster, src, f"{src}-out", {"s3": s3}), "--stop-at-end"
    )
    assert relay.start().wait(60) == 1, relay.log_tail()
    # Refused credentials do not pass by retrying: the conditional-write probe, before any record, stops it.
    denied = (
        rf"kafka-lfs-relay: S3 PutObject of s3://{s3_server.bucket}/{prefix}/[^/ ]+/\.kfr-conditional-write-probe-"
        r"[0-9a-f]+ for the conditional-write probe failed: no usable credentials .*check access_key_id"
    )
    assert re.search(denied, relay.log_text()), relay.log_tail()
    assert "-wrong" not in relay.log_text()
    assert count_target(kafka_cluster, f"{src}-out", 1) == 0
