"""The hydrate target end to end: the real CLI, real Kafka, real SeaweedFS, envelopes written by hand."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import Envelope
from tests.conftest import TopicFactory
from tests.integration.harness import RelayProcess, end_offsets, wait_for
from tests.integration.hydrate_support import (
    NOW,
    Rec,
    assert_records,
    envelope_for,
    hydrate_relay,
    produce_records,
    read_records,
    unique_prefix,
)

pytestmark = pytest.mark.integration

BIG_TOPIC = {"max.message.bytes": "100000000"}


def test_hand_written_envelopes_of_both_shapes_and_every_checksum_hydrate_in_order(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """kfs_lfs (sha256/md5/crc32) and lfs_version envelopes hydrate, plain records pass, all in order."""
    rng = random.Random(6)
    prefix = unique_prefix()
    source = topic_factory(kafka_cluster, partitions=3, config=BIG_TOPIC)
    target = topic_factory(kafka_cluster, partitions=3, config=BIG_TOPIC)
    produced: list[Rec] = []
    expected: list[Rec] = []
    for i in range(60):
        partition, key, ts = i % 3, f"k{i}".encode(), NOW + i
        headers: tuple[tuple[str, bytes | None], ...] = (("trace", f"t{i}".encode()), ("empty", None))
        size = rng.choice([0, 1, 1000, 300_000, 1_500_000])
        data = os.urandom(size)
        kind = i % 6
        if kind == 5:  # plain record, or a tombstone
            value = None if i % 12 == 11 else data
            produced.append(Rec(partition, key, value, headers, ts))
            expected.append(Rec(partition, key, value, headers, ts))
            continue
        alg = {0: None, 1: "md5", 2: "crc32", 3: "sha256", 4: "sha256"}[kind]
        env = envelope_for(
            s3_server,
            f"{prefix}/{i}",
            data,
            alg=alg,
            content_type="application/x-test" if i % 2 else None,
            original_headers={"traceparent": f"00-{i}", "trace": "not-this-one"},
        )
        if kind == 4:  # the legacy shape knows neither original_headers nor sha256 beside its checksum
            env = Envelope(
                bucket=env.bucket,
                key=env.key,
                size=env.size,
                sha256=None,
                checksum=env.sha256,
                checksum_alg="sha256",
                content_type=env.content_type,
                shape="lfs_version",
            )
            value = env.encode("lfs_version")
            restored = headers
        else:
            value = env.encode()
            restored = (*headers, ("traceparent", f"00-{i}".encode()))
        if env.content_type is not None:
            restored = (*restored, ("content-type", b"application/x-test"))
        produced.append(Rec(partition, key, value, headers, ts))
        expected.append(Rec(partition, key, data, restored, ts))
    produce_records(kafka_cluster, source, produced)
    relay = hydrate_relay(tmp_path, kafka_cluster, source, target, s3_server, "--stop-at-end", part_size="256KiB")
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert_records(expected, read_records(kafka_cluster, target, 3))


# -- per-record errors -------------------------------------------------------------------------------

OTHER_BUCKET = "kfr-hydrate-untrusted"
FAULTS = ("tampered", "deleted", "bucket_not_allowed", "oversize_claim", "malformed_json", "longer_object")
KIND_OF = {
    "tampered": "checksum_mismatch",
    "deleted": "missing_object",
    "bucket_not_allowed": "bucket_not_allowed",
    "oversize_claim": "too_large",
    "malformed_json": "envelope_invalid",
    "longer_object": "size_mismatch",
}


def faulty_value(server: S3Server, fault: str, prefix: str, i: int) -> bytes:
    """An envelope record value that cannot be hydrated, for the reason ``fault``."""
    data = os.urandom(20_000)
    key = f"{prefix}/bad-{i}"
    if fault == "tampered":
        env = envelope_for(server, key, data, alg="md5")
        server.client().put_object(Bucket=server.bucket, Key=key, Body=bytes([data[0] ^ 1]) + data[1:])
        return env.encode()
    if fault == "deleted":
        return envelope_for(server, key, data, store=False).encode()
    if fault == "bucket_not_allowed":
        client = server.client()
        if OTHER_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=OTHER_BUCKET)
        return envelope_for(server, key, data, bucket=OTHER_BUCKET).encode()  # the object exists: it is never read
    if fault == "oversize_claim":
        return envelope_for(server, key, data, size=5 * 1024**3).encode()
    if fault == "malformed_json":
        return envelope_for(server, key, data).encode()[:-7]
    if fault == "longer_object":
        env = envelope_for(server, key, data, alg="crc32")
        server.client().put_object(Bucket=server.bucket, Key=key, Body=data + b"!")
        return env.encode()
    raise AssertionError(fault)


def mixed_with_faults(server: S3Server, partitions: int) -> tuple[list[Rec], list[Rec], list[Rec]]:
    """Records with every fault among good envelopes and plain records: (produced, hydrated good, faulty)."""
    prefix = unique_prefix()
    produced, good, bad = [], [], []
    faults = iter(FAULTS)
    for i in range(36):
        partition, key, headers, ts = i % partitions, f"k{i}".encode(), (("h", str(i).encode()),), NOW + i
        fault = next(faults, None) if i % 5 == 2 else None
        if fault is not None:
            rec = Rec(partition, key, faulty_value(server, fault, prefix, i), headers, ts)
            produced.append(rec)
            bad.append(rec)
            continue
        data = os.urandom(30_000 + i)
        value = envelope_for(server, f"{prefix}/{i}", data).encode() if i % 3 else data
        produced.append(Rec(partition, key, value, headers, ts))
        good.append(Rec(partition, key, data, headers, ts))
    assert len(bad) == len(FAULTS)
    return produced, good, bad


def with_error_header(rec: Rec, fault: str) -> Rec:
    """``rec`` as the policy writes it: unchanged but for a ``kfr-hydrate-error`` header of the fault's kind."""
    return Rec(
        rec.partition, rec.key, rec.value, (*rec.headers, ("kfr-hydrate-error", KIND_OF[fault].encode())), rec.timestamp
    )


def error_kinds(records: list[Rec]) -> list[Rec]:
    """``records`` with the sentence cut from each ``kfr-hydrate-error`` header, leaving the kind."""
    out = []
    for rec in records:
        headers = tuple(
            (k, v.split(b":", 1)[0] if k == "kfr-hydrate-error" and v is not None else v) for k, v in rec.headers
        )
        out.append(Rec(rec.partition, rec.key, rec.value, headers, rec.timestamp))
    return out


def test_dead_letter_policy_sends_each_faulty_envelope_to_the_dead_letter_topic(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """on_error dead-letter: each faulty envelope goes unchanged to the dead-letter topic with its kind."""
    source, target = topic_factory(kafka_cluster, partitions=2), topic_factory(kafka_cluster, partitions=2)
    dlq = f"{target}-dlq"
    produced, good, bad = mixed_with_faults(s3_server, 2)
    produce_records(kafka_cluster, source, produced)
    relay = hydrate_relay(
        tmp_path,
        kafka_cluster,
        source,
        target,
        s3_server,
        "--stop-at-end",
        max_object_size="1MiB",
        on_error="dead-letter",
        dead_letter_topic=dlq,
    )
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert_records(good, read_records(kafka_cluster, target, 2))
    assert_records(
        [with_error_header(r, f) for r, f in zip(bad, FAULTS, strict=True)],
        error_kinds(read_records(kafka_cluster, dlq, 2)),
    )


def test_passthrough_policy_writes_each_faulty_envelope_unchanged_with_its_error(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """on_error passthrough: each faulty envelope is written unchanged, in its place, with its error kind."""
    source, target = topic_factory(kafka_cluster, partitions=2), topic_factory(kafka_cluster, partitions=2)
    produced, good, bad = mixed_with_faults(s3_server, 2)
    produce_records(kafka_cluster, source, produced)
    relay = hydrate_relay(
        tmp_path,
        kafka_cluster,
        source,
        target,
        s3_server,
        "--stop-at-end",
        max_object_size="1MiB",
        on_error="passthrough",
    )
    assert relay.start().wait(120) == 0, relay.log_tail()
    faults = dict(zip((r.key for r in bad), FAULTS, strict=True))
    good_by_key = {r.key: r for r in good}
    expected = [with_error_header(r, faults[r.key]) if r.key in faults else good_by_key[r.key] for r in produced]
    assert_records(expected, error_kinds(read_records(kafka_cluster, target, 2)))


@pytest.mark.parametrize("fault", FAULTS[:5])
def test_fail_policy_stops_at_the_faulty_envelope_and_leaves_it_unrelayed(
    fault: str, tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """on_error fail: the relay stops at the faulty envelope, naming it, and again there after a restart."""
    source, target = topic_factory(kafka_cluster), topic_factory(kafka_cluster)
    prefix = unique_prefix()
    good = [Rec(0, f"k{i}".encode(), os.urandom(1000), (), NOW + i) for i in range(12)]
    produced = [
        Rec(r.partition, r.key, envelope_for(s3_server, f"{prefix}/{i}", r.value or b"").encode(), (), r.timestamp)
        for i, r in enumerate(good)
    ]
    bad_at = 7
    produced[bad_at] = Rec(0, b"bad", faulty_value(s3_server, fault, prefix, bad_at), (), NOW + bad_at)
    produce_records(kafka_cluster, source, produced)
    relay = hydrate_relay(
        tmp_path,
        kafka_cluster,
        source,
        target,
        s3_server,
        "--stop-at-end",
        max_object_size="1MiB",
        target={"batch": {"max_records": 2}},
    )
    for _ in range(2):
        relay.start()
        assert relay.wait(120) == 1, relay.log_text()[-6000:]
        stopped = relay.log_text().split("=== run")[-1]
        assert f"{source}/0@{bad_at}" in stopped and KIND_OF[fault] in stopped, stopped[-3000:]
        written = read_records(kafka_cluster, target, 1)
        assert len(written) <= bad_at
        assert_records(good[: len(written)], written)


def test_refused_credentials_stop_the_relay_naming_the_object_but_never_the_secret(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """S3 refusing the relay's credentials is not a record error: the relay stops, naming the object and the kind."""
    source, target = topic_factory(kafka_cluster), topic_factory(kafka_cluster)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", b"payload")
    produce_records(kafka_cluster, source, [Rec(0, b"k", env.encode(), (), NOW)])
    secret = "not-the-secret-" + "x" * 20
    relay = hydrate_relay(tmp_path, kafka_cluster, source, target, s3_server, "--stop-at-end", on_error="passthrough")
    config = relay.config_path.read_text(encoding="utf-8").replace(s3_server.secret_access_key, secret)
    relay.config_path.write_text(config, encoding="utf-8")
    assert relay.start().wait(120) == 1, relay.log_tail()
    log = relay.log_text()
    assert f"s3://{env.bucket}/{env.key}" in log and "credentials: " in log, log[-2000:]
    assert secret not in log and s3_server.secret_access_key not in log
    assert read_records(kafka_cluster, target, 1) == []


# -- crashes and outages -----------------------------------------------------------------------------


def envelopes_and_payloads(
    server: S3Server, count: int, partitions: int, start: int = 0, size: int = 200_000
) -> tuple[list[Rec], list[Rec]]:
    """``count`` envelope records (every fourth a plain record) and the records they hydrate to."""
    prefix = unique_prefix()
    produced, expected = [], []
    for i in range(start, start + count):
        partition, key, headers, ts = i % partitions, f"k{i}".encode(), (("n", str(i).encode()),), NOW + i
        data = os.urandom(size + i % 1000)
        value = envelope_for(server, f"{prefix}/{i}", data, alg="crc32").encode() if i % 4 else data
        produced.append(Rec(partition, key, value, headers, ts))
        expected.append(Rec(partition, key, data, headers, ts))
    return produced, expected


def test_kill9_mid_hydration_then_restart_is_exactly_once(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """A hydrate relay killed with SIGKILL three times mid-hydration, then restarted, writes each record once."""
    source, target = topic_factory(kafka_cluster, partitions=2), topic_factory(kafka_cluster, partitions=2)
    dlq = f"{target}-dlq"
    produced, expected = envelopes_and_payloads(s3_server, 400, 2)
    faulty = [
        Rec(
            p,
            f"bad{p}".encode(),
            envelope_for(s3_server, unique_prefix(), b"gone", store=False).encode(),
            (),
            NOW + 5000 + p,
        )
        for p in range(2)
    ]
    produce_records(kafka_cluster, source, produced[:200] + faulty + produced[200:])
    relay = hydrate_relay(
        tmp_path,
        kafka_cluster,
        source,
        target,
        s3_server,
        on_error="dead-letter",
        dead_letter_topic=dlq,
        target={"batch": {"max_records": 10}},
    )
    rng = random.Random(9)

    def appended() -> int:
        # End offsets, not a read of 80 MB of payloads: cheap enough to poll while hydrating.
        return sum(end_offsets(kafka_cluster, target, 2))

    for _ in range(3):
        # Each kill follows fresh progress by a fraction of a second, so it lands mid-hydration
        # whether start-up is slow (a busy machine) or hydration is fast (an idle one).
        before = appended()
        relay.start()
        deadline = time.monotonic() + 90
        while appended() <= before and time.monotonic() < deadline:
            assert relay.alive(), relay.log_tail()
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.3))
        assert relay.alive(), relay.log_tail()
        relay.kill9()
    written = len(read_records(kafka_cluster, target, 2))
    assert 0 < written < len(expected), f"the kills should land mid-hydration, but {written} records were written"
    final = RelayProcess(relay.config_path, "--stop-at-end")
    assert final.start().wait(180) == 0, final.log_tail()
    assert_records(expected, read_records(kafka_cluster, target, 2))
    assert [r.key for r in read_records(kafka_cluster, dlq, 2)] == [b"bad0", b"bad1"]


def test_s3_stopped_for_20_seconds_pauses_hydration_and_loses_nothing(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory
) -> None:
    """With S3 down for 20 s the relay waits, retrying, and afterwards every record is hydrated exactly once."""
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        source, target = topic_factory(kafka_cluster, partitions=2), topic_factory(kafka_cluster, partitions=2)
        first, first_expected = envelopes_and_payloads(server, 40, 2, size=50_000)
        later, later_expected = envelopes_and_payloads(server, 80, 2, start=40, size=50_000)
        produce_records(kafka_cluster, source, first)
        relay = hydrate_relay(tmp_path, kafka_cluster, source, target, server).start()
        wait_for(
            "the first records hydrated", lambda: len(read_records(kafka_cluster, target, 2)) >= len(first), 60, relay
        )
        server.stop()
        produce_records(kafka_cluster, source, later)
        time.sleep(20)
        assert relay.alive(), relay.log_tail()
        assert len(read_records(kafka_cluster, target, 2)) < len(first) + len(later)
        server.start()
        total = len(first) + len(later)
        wait_for("every record hydrated", lambda: len(read_records(kafka_cluster, target, 2)) >= total, 120, relay)
        assert relay.terminate() == 0, relay.log_tail()
        assert "S3 fetch failed; retrying" in relay.log_text(), "the relay never waited for S3: no outage seen"
        assert_records(first_expected + later_expected, read_records(kafka_cluster, target, 2))
    finally:
        server.stop()
