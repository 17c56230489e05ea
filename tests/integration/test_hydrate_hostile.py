"""The hydrate target on hostile envelopes, end to end: real CLI, real Kafka, real SeaweedFS.

Anyone who can write the envelope topic controls the envelopes: a forged size claim must cost the
bytes received, not the bytes claimed; a large value is not parsed; fields a later KafScale adds
are ignored; an unknown version is refused naming it; our own ``checksum_alg: none`` envelopes
hydrate under the default settings.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import Envelope, checksum
from tests.conftest import TopicFactory
from tests.integration.harness import RelayProcess, relay_config, wait_for, write_config
from tests.integration.hydrate_support import (
    NOW,
    Rec,
    assert_records,
    envelope_for,
    hydrate_relay,
    hydrate_section,
    produce_records,
    put_object,
    read_records,
    unique_prefix,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GIB = 1024 * MIB
BIG_TOPIC = {"max.message.bytes": str(20 * MIB)}


def peak_rss_mib(relay: RelayProcess) -> float:
    """The relay process's peak resident set so far (VmHWM), in MiB."""
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def error_header(rec: Rec) -> str:
    return next((v or b"" for k, v in rec.headers if k == "kfr-hydrate-error"), b"").decode()


def test_forged_size_claims_cost_the_bytes_received_not_the_bytes_claimed(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """Envelopes claiming 4 GiB and 900 MiB of a 4-byte object leave the relay's peak RSS where it was.

    The 4 GiB claim can never be produced (librdkafka takes at most 1e9 bytes, the topic here 1e9):
    it is refused before any fetch. The 900 MiB claim fits every bound (a window of 4 GiB, a topic
    taking 1e9 bytes), so it is fetched: the fetch learns the object's length from the first
    response and fails, having received 4 bytes. Both are dead-lettered; the relay carries on.
    """
    source = topic_factory(kafka_cluster)
    target = topic_factory(kafka_cluster, config={"max.message.bytes": "1000000000"})
    dlq = f"{target}-dlq"
    prefix = unique_prefix()
    good = [os.urandom(200_000), os.urandom(300_000)]
    envelopes = [envelope_for(s3_server, f"{prefix}/good-{i}", data) for i, data in enumerate(good)]
    put_object(s3_server, f"{prefix}/tiny", b"four")
    forged = {
        claim: Envelope(bucket=s3_server.bucket, key=f"{prefix}/tiny", size=claim, sha256=checksum(b"claimed"))
        for claim in (4 * GIB, 900 * MIB)
    }
    config = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": source, "target": target}],
        name=f"forged-{uuid.uuid4().hex[:8]}",
        max_in_flight="4GiB",
        target={
            "type": "hydrate",
            "hydrate": hydrate_section(s3_server, on_error="dead-letter", dead_letter_topic=dlq),
        },
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", config))
    produce_records(kafka_cluster, source, [Rec(0, b"good-0", envelopes[0].encode(), (), NOW)])
    relay.start()
    try:
        wait_for("the first envelope hydrated", lambda: len(read_records(kafka_cluster, target, 1)) == 1, 90, relay)
        baseline = peak_rss_mib(relay)
        produce_records(
            kafka_cluster,
            source,
            [
                Rec(0, b"forged-4g", forged[4 * GIB].encode(), (), NOW + 1),
                Rec(0, b"forged-900m", forged[900 * MIB].encode(), (), NOW + 2),
                Rec(0, b"good-1", envelopes[1].encode(), (), NOW + 3),
            ],
        )
        wait_for("the second envelope hydrated", lambda: len(read_records(kafka_cluster, target, 1)) == 2, 90, relay)
        wait_for("both forgeries dead-lettered", lambda: len(read_records(kafka_cluster, dlq, 1)) == 2, 30, relay)
        after = peak_rss_mib(relay)
    finally:
        assert relay.terminate() == 0, relay.log_tail()
    assert after - baseline < 32, f"peak RSS rose from {baseline:.0f} MiB to {after:.0f} MiB"
    assert [r.value for r in read_records(kafka_cluster, target, 1)] == good
    dead = read_records(kafka_cluster, dlq, 1)
    assert [r.key for r in dead] == [b"forged-4g", b"forged-900m"]
    too_large, short = error_header(dead[0]), error_header(dead[1])
    assert too_large.startswith("too_large:") and f"claims {4 * GIB} bytes" in too_large, too_large
    assert "message.max.bytes is 1000000000" in too_large, too_large
    assert short.startswith("size_mismatch:") and "has 4 bytes" in short, short
    print(f"peak RSS: {baseline:.0f} MiB before the forged claims, {after:.0f} MiB after")


def test_the_default_bound_is_what_the_target_topic_takes(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """Without max_object_size, a claim the target topic cannot take is refused before any fetch, one that fits is not.

    The claims point at an object that does not exist: a fetch would fail with missing_object.
    """
    source = topic_factory(kafka_cluster)
    target = topic_factory(kafka_cluster, config={"max.message.bytes": str(2 * MIB)})
    prefix = unique_prefix()
    absent = envelope_for(s3_server, f"{prefix}/absent", b"x", store=False)
    fits, too_big = (
        Envelope(bucket=absent.bucket, key=absent.key, size=size, sha256=absent.sha256) for size in (MIB, 3 * MIB)
    )
    produce_records(
        kafka_cluster, source, [Rec(0, b"fits", fits.encode(), (), NOW), Rec(0, b"big", too_big.encode(), (), NOW + 1)]
    )
    relay = hydrate_relay(tmp_path, kafka_cluster, source, target, s3_server, "--stop-at-end", on_error="passthrough")
    assert relay.start().wait(120) == 0, relay.log_tail()
    out = read_records(kafka_cluster, target, 1)
    assert [r.key for r in out] == [b"fits", b"big"]
    assert error_header(out[0]).startswith("missing_object:"), error_header(out[0])
    assert error_header(out[1]).startswith("too_large:") and f"max.message.bytes={2 * MIB}" in error_header(out[1])
    assert "envelope claims bounded" in relay.log_text() and str(2 * MIB - 512) in relay.log_text()


def test_fields_of_a_later_kafscale_are_ignored_and_large_values_are_plain(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """Unknown fields hydrate; a value over 64 KiB is plain data, whatever it starts with; a legacy envelope with
    nothing to verify and a kfs_lfs version 2 go to on_error, the latter naming its version."""
    source, target = topic_factory(kafka_cluster, config=BIG_TOPIC), topic_factory(kafka_cluster, config=BIG_TOPIC)
    dlq = f"{target}-dlq"
    prefix = unique_prefix()
    data = os.urandom(50_000)
    env = envelope_for(s3_server, f"{prefix}/o", data)
    with_new_fields = env.encode()[:-1] + b',"compression":"zstd","chunks":[{"n":1}],"ttl":7}'
    not_an_envelope = b'{"kfs_lfs":1,"bucket":"b","key":"k","pad":"' + b"x" * (8 * MIB) + b'"}'
    version_2 = b'{"kfs_lfs":2' + env.encode()[len(b'{"kfs_lfs":1') :]
    unverifiable = Envelope(
        bucket=env.bucket, key=env.key, size=env.size, sha256=None, checksum_alg="none", shape="lfs_version"
    ).encode("lfs_version")
    produced = [
        Rec(0, b"new-fields", with_new_fields, (), NOW),
        Rec(0, b"plain", not_an_envelope, (), NOW + 1),
        Rec(0, b"v2", version_2, (), NOW + 2),
        Rec(0, b"unverifiable", unverifiable, (), NOW + 3),
    ]
    produce_records(kafka_cluster, source, produced)
    relay = hydrate_relay(
        tmp_path, kafka_cluster, source, target, s3_server, "--stop-at-end", on_error="dead-letter",
        dead_letter_topic=dlq,
    )  # fmt: skip
    assert relay.start().wait(120) == 0, relay.log_tail()
    assert_records([Rec(0, b"new-fields", data, (), NOW), produced[1]], read_records(kafka_cluster, target, 1))
    dead = read_records(kafka_cluster, dlq, 1)
    assert [r.key for r in dead] == [b"v2", b"unverifiable"]
    assert error_header(dead[0]).startswith("envelope_invalid:") and "kfs_lfs version 2" in error_header(dead[0])
    assert error_header(dead[1]).startswith("unverified:") and "nothing to verify" in error_header(dead[1])


def test_an_unknown_version_stops_the_fail_policy_with_a_line_naming_it(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """on_error fail: the relay stops at a kfs_lfs version 2 envelope, and its last line names the version."""
    source, target = topic_factory(kafka_cluster), topic_factory(kafka_cluster)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", b"payload")
    produce_records(kafka_cluster, source, [Rec(0, b"v2", b'{"kfs_lfs":2' + env.encode()[12:], (), NOW)])
    relay = hydrate_relay(tmp_path, kafka_cluster, source, target, s3_server, "--stop-at-end")
    assert relay.start().wait(120) == 1, relay.log_tail()
    assert f"{source}/0@0" in relay.log_text() and "unsupported kfs_lfs version 2" in relay.log_text()
    assert read_records(kafka_cluster, target, 1) == []


def test_our_own_checksum_none_envelopes_hydrate_with_the_defaults(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """An lfs relay with checksum_alg none writes envelopes carrying sha256; a default hydrate relay (on_error fail,
    no allow_unverified) hydrates them, verified by that sha256."""
    source, envelopes, plain = (topic_factory(kafka_cluster, config=BIG_TOPIC) for _ in range(3))
    records = [Rec(0, f"k{i}".encode(), os.urandom(size), (), NOW + i) for i, size in enumerate([10, 2 * MIB, 5000])]
    produce_records(kafka_cluster, source, records)
    prefix = unique_prefix()
    connection = hydrate_section(s3_server)["s3"]
    offload: dict[str, Any] = relay_config(
        [kafka_cluster],
        kafka_cluster,
        [{"source": source, "target": envelopes}],
        name=f"offload-{prefix}",
        target={
            "type": "lfs",
            "kafka": {"message.max.bytes": str(20 * MIB)},
            "lfs": {
                "threshold": "1KiB",
                "checksum_alg": "none",
                "s3": {**connection, "bucket": s3_server.bucket, "prefix": prefix},
            },
        },
    )
    offloader = RelayProcess(write_config(tmp_path / "offload.yml", offload), "--stop-at-end")
    assert offloader.start().wait(120) == 0, offloader.log_tail()
    written = read_records(kafka_cluster, envelopes, 1)
    assert sum(b'"checksum_alg":"none"' in (r.value or b"") for r in written) == 2
    hydrator = hydrate_relay(tmp_path, kafka_cluster, envelopes, plain, s3_server, "--stop-at-end")
    assert hydrator.start().wait(120) == 0, hydrator.log_tail()
    hydrated = read_records(kafka_cluster, plain, 1)
    assert [r.value for r in hydrated] == [r.value for r in records]
