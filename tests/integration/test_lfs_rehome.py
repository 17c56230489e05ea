"""Re-homing (targets.lfs.rehome): copies between two buckets and two servers; a DR site that outlives its source."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kafka_lfs_relay.sandbox import KafkaCluster
from kafka_lfs_relay.sandbox.s3 import S3Server
from lfs import Envelope, checksum, decode_envelope, detect
from relay.message import Message
from relay.options import Section
from relay.settings import Backoff, TopicConfig
from relay.target import TargetError
from targets.context import TargetContext
from targets.lfs.config import LfsConfig, RecordError, build_envelope, parse_lfs
from targets.lfs.rehome import Rehomed, Rehomer
from targets.lfs.upload import SHA256_METADATA, LfsMetrics, S3Uploader
from tests.integration.harness import RelayProcess
from tests.integration.hydrate_support import Rec, assert_records, hydrate_relay, produce_records, read_records
from tests.integration.lfs_harness import (
    big_topic,
    free_port,
    incomplete_uploads,
    lfs_config,
    list_keys,
    metric,
    object_bytes,
    s3_section,
    scrape,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
REHOMED = "kafka_lfs_relay_lfs_records_rehomed_total"


def connection(server: S3Server) -> dict[str, Any]:
    """The S3 connection keys of ``server`` (no bucket)."""
    return {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "path_style": True,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }


def new_bucket(server: S3Server) -> str:
    """A fresh bucket on ``server``."""
    name = f"src-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return name


class Copier:
    """A Rehomer over real S3, as the lfs target builds it, and the messages it is given."""

    def __init__(self, target: S3Server, prefix: str, rehome: dict[str, Any], relay: str = "dr") -> None:
        section = {
            "part_size": "5MiB",
            "s3": {**connection(target), "bucket": target.bucket, "prefix": prefix},
            "rehome": rehome,
        }
        context = TargetContext(relay, (TopicConfig("orders", "orders-dr"),), 256 * MIB)
        self.lfs: LfsConfig = parse_lfs(Section(section, "target.lfs"), context)
        self.metrics = LfsMetrics(CollectorRegistry())
        retry = Backoff(0.05, 0.5)
        self.uploader = S3Uploader(self.lfs.s3, 4, self.lfs.part_size, retry, self.metrics, f"{prefix}/dr/")
        self.rehomer = Rehomer(self.lfs, self.uploader, self.metrics, retry)
        self.uploader.start()
        self.rehomer.start()

    def copy(self, envelope: Envelope | bytes, offset: int) -> Rehomed:
        """Re-home the envelope as the record at orders/0@offset; the result, or the failure raised."""
        value = envelope if isinstance(envelope, bytes) else envelope.encode()
        msg = Message(b"k", value, (), "orders-dr", "east", "orders", 0, offset, 1)
        key_for = lambda sha256: self.lfs.key_template.render(  # noqa: E731
            self.lfs.s3.prefix, "orders", "orders-dr", 0, offset, self.lfs.relay, sha256
        )
        upload = self.rehomer.begin(msg, key_for)
        assert upload is not None, "an envelope was not taken for one"
        stored = upload.result()
        assert isinstance(stored, Rehomed) and stored.envelope is not None
        return stored

    def close(self) -> None:
        self.rehomer.close()
        self.uploader.close()


def stored_envelope(server: S3Server, bucket: str, data: bytes, **fields: Any) -> Envelope:
    """``data`` put in ``bucket`` under a KafScale-shaped key, and a KafScale envelope for it."""
    key = f"default/orders/lfs/2026/12/01/obj-{uuid.uuid4()}"
    server.client().put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/x-order")
    return Envelope(bucket=bucket, key=key, size=len(data), sha256=checksum(data), **fields)


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[S3Server]:
    """A second SeaweedFS: a bucket there cannot be read from the first server's endpoint."""
    server = S3Server(tmp_path / "s3-east")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_server_side_copy_between_two_buckets_keeps_the_envelope_and_never_overwrites(s3_server: S3Server) -> None:
    """Same endpoint: CopyObject into our key; fields kept; a retry finds it; other bytes there stop the relay."""
    source = new_bucket(s3_server)
    prefix = f"rehome-{uuid.uuid4().hex[:8]}"
    copier = Copier(s3_server, prefix, {"allowed_buckets": [source]})
    client = s3_server.client()
    try:
        assert copier.rehomer.server, "the same connection must copy server-side"
        small, large = os.urandom(3 * MIB), os.urandom(13 * MIB)
        kafscale = stored_envelope(
            s3_server, source, small, checksum_alg="md5", checksum=checksum(small, "md5"), content_type="text/x",
            original_headers={"traceparent": "00-ab-01"}, created_at="2026-12-01T00:00:00Z", proxy_id="lfs-proxy-1",
        )  # fmt: skip
        theirs = stored_envelope(s3_server, source, large)
        moved = copier.copy(kafscale, 10)
        assert moved.key.startswith(f"{prefix}/dr/orders/0/10-{kafscale.sha256}")
        assert moved.envelope == dataclasses.replace(kafscale, bucket=s3_server.bucket, key=moved.key)
        assert object_bytes(client, s3_server.bucket, moved.key) == small
        assert object_bytes(client, source, kafscale.key) == small, "the source object was touched"
        big = copier.copy(theirs, 11)
        assert object_bytes(client, s3_server.bucket, big.key) == large
        again = copier.copy(kafscale, 10)
        assert again.key == moved.key and again.envelope == moved.envelope, "a retry did not land on the same key"
        assert list_keys(client, s3_server.bucket, prefix) == {moved.key, big.key}
        assert copier.metrics.bytes_rehomed.labels(path="server")._value.get() == len(small) + len(large)

        squatter = os.urandom(1024)
        taken = stored_envelope(s3_server, source, squatter)
        key = f"{prefix}/dr/orders/0/12-{taken.sha256}"
        client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"other bytes")
        with pytest.raises(TargetError, match="already holds other bytes"):
            copier.copy(taken, 12)
        assert object_bytes(client, s3_server.bucket, key) == b"other bytes"
    finally:
        copier.close()


def test_an_envelope_that_does_not_hold_is_refused_and_leaves_nothing(s3_server: S3Server) -> None:
    """A checksum or size that does not match, a missing object, a bucket not allowed: record errors, no object."""
    source = new_bucket(s3_server)
    prefix = f"rehome-{uuid.uuid4().hex[:8]}"
    copier = Copier(s3_server, prefix, {"allowed_buckets": [source]})
    try:
        data = os.urandom(2 * MIB)
        good = stored_envelope(s3_server, source, data)
        lying = dataclasses.replace(good, sha256=hashlib.sha256(b"other").hexdigest())
        short = dataclasses.replace(good, size=len(data) - 1)
        gone = dataclasses.replace(good, key=good.key + "-gone")
        elsewhere = dataclasses.replace(good, bucket=s3_server.bucket)
        cases = [(lying, "checksum_mismatch"), (short, "size_mismatch"), (gone, "missing_object"),
                 (elsewhere, "bucket_not_allowed")]  # fmt: skip
        for offset, (envelope, kind) in enumerate(cases):
            with pytest.raises(RecordError) as failed:
                copier.copy(envelope, offset)
            assert failed.value.kind == kind
            assert f"orders/0@{offset}" in failed.value.reason
        with pytest.raises(RecordError) as invalid:
            copier.copy(b'{"kfs_lfs":1,"bucket":"b"}', 9)
        assert invalid.value.kind == "envelope_invalid"
        assert list_keys(s3_server.client(), s3_server.bucket, prefix) == set(), "a refused copy left an object"
    finally:
        copier.close()


def test_a_bucket_on_another_server_is_streamed_with_its_checksums_verified(
    s3_server: S3Server, other_server: S3Server
) -> None:
    """Another endpoint: GETs through the relay, a multipart upload completed only once the payload verified."""
    source = new_bucket(other_server)
    prefix = f"rehome-{uuid.uuid4().hex[:8]}"
    rehome = {"allowed_buckets": [source], "s3": connection(other_server), "concurrency": 2}
    copier = Copier(s3_server, prefix, rehome)
    client = s3_server.client()
    try:
        assert not copier.rehomer.server, "another endpoint must be streamed"
        payloads = [os.urandom(n) for n in (0, 700, 5 * MIB, 5 * MIB + 1, 17 * MIB)]
        envelopes = [stored_envelope(other_server, source, p) for p in payloads]
        # The documented legacy shape, which names no sha256 when its checksum is md5.
        legacy_md5 = dataclasses.replace(envelopes[2], checksum_alg="md5", checksum=checksum(payloads[2], "md5"))
        legacy = legacy_md5.encode("lfs_version")
        assert decode_envelope(legacy).sha256 is None
        results = [copier.copy(env, i) for i, env in enumerate(envelopes)] + [copier.copy(legacy, 9)]
        for result, data in zip(results, [*payloads, payloads[2]], strict=True):
            assert result.envelope is not None and result.envelope.sha256 == checksum(data)
            assert result.envelope.bucket == s3_server.bucket
            assert object_bytes(client, s3_server.bucket, result.key) == data
        assert results[-1].envelope is not None and results[-1].envelope.checksum_alg == "md5"
        assert client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=prefix).get("Uploads", []) == []

        corrupt = dataclasses.replace(envelopes[4], sha256=checksum(payloads[3]), size=len(payloads[4]))
        with pytest.raises(RecordError) as failed:
            copier.copy(corrupt, 20)
        assert failed.value.kind == "checksum_mismatch"
        assert not any("/20-" in key for key in list_keys(client, s3_server.bucket, prefix))
        assert client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=prefix).get("Uploads", []) == []
    finally:
        copier.close()


def test_mirror_of_envelopes_killed_mid_copy_then_source_bucket_deleted_hydrates_from_dr_byte_for_byte(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, other_server: S3Server
) -> None:
    """KafScale's envelopes and ours, re-homed across servers with a kill -9 mid-copy; then the source is lost."""
    east = new_bucket(other_server)
    source, dr, plain = (big_topic(kafka_cluster, 2) for _ in range(3))
    payloads: list[Rec] = []  # the records a consumer of the DR site must get back, hydrated
    envelopes: list[Rec] = []  # what the source topic holds
    now = int(time.time() * 1000)
    for i in range(16):
        size = [3 * MIB, 700 * 1024, 11 * MIB, 6 * MIB][i % 4]
        data = os.urandom(size)
        headers: tuple[tuple[str, bytes | None], ...] = (("content-type", b"application/x-order"), ("n", b"%d" % i))
        rec = Rec(i % 2, f"order-{i}".encode(), data, headers, now + i)
        payloads.append(rec)
        if i % 4 == 3:  # our own envelope, as an lfs relay in the east region wrote it
            key = f"east/east-mirror/orders/{i % 2}/{i}-{checksum(data)}"
            metadata = {SHA256_METADATA: checksum(data)}
            other_server.client().put_object(Bucket=east, Key=key, Body=data, Metadata=metadata)
            msg = Message(rec.key, data, headers, "orders", "east", "orders", i % 2, i, now + i)
            env = build_envelope(
                msg, bucket=east, key=key, size=size, sha256=checksum(data), alg="sha256", checksum=checksum(data),
                header_allowlist=("content-type",),
                proxy_id="kafka-lfs-relay/east-mirror",
            )  # fmt: skip
            value = env.encode()
        elif i % 4 == 2:  # the documented legacy shape
            legacy = stored_envelope(other_server, east, data, checksum_alg="crc32", checksum=checksum(data, "crc32"))
            value = legacy.encode("lfs_version")
        else:  # KafScale's proxy
            value = stored_envelope(
                other_server, east, data, checksum_alg="md5" if i % 2 else None,
                checksum=checksum(data, "md5") if i % 2 else None, original_headers={"n": str(i)},
                content_type="application/x-order", created_at="2026-12-01T00:00:00Z", proxy_id="lfs-proxy-east",
            ).encode()  # fmt: skip
        envelopes.append(dataclasses.replace(rec, value=value))
    small = Rec(0, b"small", b"inline", (("content-type", b"text/plain"),), now + 100)
    large = Rec(1, b"large", os.urandom(2 * MIB), (("content-type", b"text/plain"),), now + 101)
    tombstone = Rec(0, b"gone", None, (), now + 102)
    produce_records(kafka_cluster, source, [*envelopes, small, large, tombstone])
    expected = [*payloads, small, large, tombstone]

    prefix = f"dr-{uuid.uuid4().hex[:8]}"
    port = free_port()
    rehome = {"allowed_buckets": [east], "s3": connection(other_server), "concurrency": 2}
    lfs = {"part_size": "5MiB", "s3": s3_section(s3_server, prefix), "rehome": rehome}
    # Transactions of two records: re-homed records are counted as their transaction commits, and one
    # transaction of all 19 would count them all at once.
    config = lfs_config(
        tmp_path / "rehome.yml", kafka_cluster, source, dr, lfs, metrics_port=port, batch={"max_records": 2}
    )
    relay = RelayProcess(config).start()

    # All the copies take a second or two: watched from outside, "three done, more to do" can pass
    # between two looks. So once three are committed, the source objects' server stops answering
    # (SIGSTOP): whatever the relay reads from it next (a copy, or a legacy envelope's payload to learn
    # its sha256) waits there until the kill.
    deadline = time.monotonic() + 120
    while metric(scrape(port), REHOMED) < 3:
        assert relay.alive() and time.monotonic() < deadline, f"three records not re-homed: {relay.log_tail()}"
    other_server.pause()
    try:
        time.sleep(1)
        values = scrape(port)
        relay.kill9()
    finally:
        other_server.resume()
    assert metric(values, REHOMED) < 16, "every envelope was re-homed before the kill"
    assert len(read_records(kafka_cluster, dr, 2)) < len(expected), "the kill came after the last commit"
    final = RelayProcess(config, "--stop-at-end")
    assert final.start().wait(240) == 0, final.log_tail()

    client = s3_server.client()
    mirrored = read_records(kafka_cluster, dr, 2)
    named = set()
    for rec in mirrored:
        found = detect(rec.value)
        if found is not None:
            assert found.bucket == s3_server.bucket and found.key.startswith(f"{prefix}/"), "an envelope names east"
            assert found.key not in named, "two envelopes name one object"
            named.add(found.key)
    assert len(named) == 17, "every envelope re-homed, and the large record offloaded"
    assert list_keys(client, s3_server.bucket, prefix) == named, "orphan objects in the DR bucket"
    assert incomplete_uploads(client, s3_server.bucket, prefix) == [], "incomplete multipart uploads left behind"

    # The east region is lost: its bucket deleted, its S3 gone.
    other_server.client().delete_bucket(Bucket=east)
    other_server.kill()
    hydrate = hydrate_relay(
        tmp_path, kafka_cluster, dr, plain, s3_server, "--stop-at-end",
        allowed_buckets=[{"bucket": s3_server.bucket, "prefixes": [f"{prefix}/"]}],
    )  # fmt: skip
    assert hydrate.start().wait(240) == 0, hydrate.log_tail()
    assert_records(expected, read_records(kafka_cluster, plain, 2))
