"""``kafka-lfs-relay verify`` against real mirrors: a clean one while its relay keeps writing, and broken ones."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay import cli
from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import decode_envelope, detect
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from targets.kafka import positions
from targets.kafka.positions import Entry
from tests.conftest import TopicFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    end_offsets,
    numbered,
    produce,
    relay_config,
    wait_for,
    write_config,
)
from tests.integration.hydrate_support import Rec, hydrate_relay, produce_records, read_records
from tests.integration.lfs_harness import big_topic, lfs_config, s3_section
from tests.readback import read_to_end

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def verify(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``verify --json`` in this process: its exit code and its report, partitions by (topic, partition)."""
    capsys.readouterr()
    code = cli.main(["verify", "--config", str(config), "--json", *args])
    out, err = capsys.readouterr()
    assert out, f"verify printed nothing (exit {code}): {err}"
    doc = json.loads(out)
    doc["by"] = {(p["topic"], p["partition"]): p for p in doc["partitions"]}
    return code, doc


def faulty_mirror(cluster: KafkaCluster, source: str, target: str, name: str, partitions: int) -> dict[str, int]:
    """Mirror ``source`` to ``target`` as a relay would (transactions of 20 records, positions and offset map
    beside them), but with three faults: partition 0 leaves out source offset 7, partition 1 alters the
    value at 25, and another producer duplicates a record into partition 2 between two transactions.

    Returns the target offsets of the altered record and of the duplicate.
    """
    found = read_to_end(cluster.client_config(), source, partitions)
    pos_topic = positions.default_topic(name)
    create_topic(cluster, pos_topic, 1, dict(positions.TOPIC_CONFIG))
    logger = librdkafka_logger()
    producer = Producer({**cluster.client_config(), "transactional.id": f"faulty-{name}", "logger": logger})
    producer.init_transactions(30)
    foreign = Producer({**cluster.client_config(), "logger": logger})
    faults: dict[str, int] = {}
    for p, records in found.items():
        sp, entry = SourcePartition(source, p), Entry(-1)
        for chunk_start in range(0, len(records), 20):
            if p == 2 and chunk_start == 40:  # between two transactions: another writer's duplicate
                faults["duplicate"] = _send(foreign, target, 2, (records[3], records[3].value()))[0]
            producer.begin_transaction()
            chunk = [m for m in records[chunk_start : chunk_start + 20] if not (p == 0 and m.offset() == 7)]
            values = [b"altered" if p == 1 and m.offset() == 25 else m.value() for m in chunk]
            offsets = _send(producer, target, p, *zip(chunk, values, strict=True))
            if p == 1 and chunk_start == 20:
                faults["altered"] = offsets[5]
            last = records[min(chunk_start + 20, len(records)) - 1].offset() or 0
            entry = entry.advanced(last + 1, max(offsets) + 1)
            producer.produce(pos_topic, positions.encode(entry), positions.key(name, sp), partition=0)
            producer.commit_transaction(30)
    return faults


def _send(producer: Producer, topic: str, partition: int, *records: Any) -> list[int]:
    """Produce each (record, value) to ``topic``/``partition`` with the record's key, headers and timestamp;
    the offsets they got (a transactional producer's still to be committed)."""
    offsets: list[int] = []
    for msg, value in records:
        producer.produce(topic, value, msg.key(), partition=partition, timestamp=msg.timestamp()[1],
                         headers=msg.headers(), on_delivery=lambda _e, m: offsets.append(m.offset() or 0))  # fmt: skip
    producer.flush(30)
    return offsets


def test_a_broken_mirror_names_each_missing_extra_and_altered_record(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record left out, one altered and one duplicated by a foreign producer: each named at its offset; exit 1."""
    source, target = topic_factory(kafka_cluster, 4), topic_factory(kafka_cluster, 4)
    produce([kafka_cluster], source, numbered(240, 4))
    name = f"faulty-{uuid.uuid4().hex[:6]}"
    faults = faulty_mirror(kafka_cluster, source, target, name, 4)
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": target}], name=name),
    )
    code, doc = verify(capsys, config)
    assert code == 1
    p0, p1, p2, p3 = (doc["by"][(source, p)] for p in range(4))
    assert (p0["missing"], p0["first_missing_source_offset"], p0["extra"], p0["different"]) == (1, 7, 0, 0)
    assert (p0["compared"], p1["compared"], p2["compared"], p3["compared"]) == (59, 60, 60, 60)
    assert (p1["different"], p1["missing"], p1["extra"]) == (1, 0, 0)
    what = "value (100 vs 7 bytes, first differing at byte 0)"  # outside digest mode: where, never the bytes
    assert p1["first_different"] == {"source_offset": 25, "target_offset": faults["altered"], "what": what}
    assert (p2["extra"], p2["first_extra_target_offset"], p2["missing"], p2["different"]) == (
        1,
        faults["duplicate"],
        0,
        0,
    )
    assert p3["ok"] and not (p0["ok"] or p1["ok"] or p2["ok"])

    capsys.readouterr()
    assert cli.main(["verify", "--config", str(config), "--digest", "--topic", source]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{source}/0 -> {target}/0: 59 compared, 1 missing (first at source offset 7), 0 extra" in lines[0]
    assert "DIFFERENT" in lines[0] and lines[3].endswith(": OK")
    assert (
        lines[-1].startswith("verified 4 partition(s): 239 records compared") and "3 partition(s) differ" in lines[-1]
    )


def test_a_clean_mirror_verifies_while_its_relay_keeps_writing(
    tmp_path: Path, kafka_cluster: KafkaCluster, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify runs against a live relay: every committed record compared, none missing, extra or different."""
    source, target = topic_factory(kafka_cluster, 3), topic_factory(kafka_cluster, 3)
    produce([kafka_cluster], source, numbered(3000, 3))
    config = write_config(
        tmp_path / "relay.yml",
        relay_config([kafka_cluster], kafka_cluster, [{"source": source, "target": target}],
                     name=f"live-{uuid.uuid4().hex[:6]}", target={"batch": {"max_records": 300}}),
    )  # fmt: skip
    relay = RelayProcess(config).start()
    stop = threading.Event()

    def keep_producing() -> None:
        start = 3000
        while not stop.is_set():
            produce([kafka_cluster], source, numbered(300, 3, start=start))
            start += 300
            time.sleep(0.05)

    feeder = threading.Thread(target=keep_producing, daemon=True)
    try:
        wait_for("records relayed", lambda: sum(end_offsets(kafka_cluster, target, 3)) >= 3000, 120, relay)
        feeder.start()
        code, doc = verify(capsys, config, "--digest")
    finally:
        stop.set()
        feeder.join(30)
        relay.terminate()
    assert code == 0, doc
    assert all(p["ok"] and p["missing"] == p["extra"] == p["different"] == 0 for p in doc["partitions"])
    assert sum(p["compared"] for p in doc["partitions"]) >= 3000


def test_a_mirror_selected_by_pattern_with_provenance_verifies_clean(
    tmp_path: Path, kafka_cluster: KafkaCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Topics a pattern selects under a rename template, stamped with provenance: each compared, none different.

    Records whose provenance names the target are dropped by the relay and not expected by verify.
    """
    prefix = f"vp{uuid.uuid4().hex[:6]}"
    sources = [create_topic(kafka_cluster, f"{prefix}-{name}", 2) for name in ("orders", "payments")]
    for topic in sources:
        produce([kafka_cluster], topic, numbered(400, 2))
        produce([kafka_cluster], topic, numbered(10, 2, start=400), headers=[("kfr-provenance", b"west")])
    config = relay_config([kafka_cluster], kafka_cluster,
                          [{"source_pattern": f"{prefix}-[a-z]+", "target": "dr-{topic}"}],
                          name=f"pv-{uuid.uuid4().hex[:6]}", provenance={"enabled": True})  # fmt: skip
    config["sources"][0]["id"], config["target"]["id"] = "east", "west"
    path = write_config(tmp_path / "relay.yml", config)
    relay = RelayProcess(path, "--stop-at-end").start()
    assert relay.wait(180) == 0, relay.log_tail()
    code, doc = verify(capsys, path)
    assert code == 0, doc
    assert sorted({p["topic"] for p in doc["partitions"]}) == sources
    assert all(p["ok"] and p["missing"] == p["extra"] == p["different"] == 0 for p in doc["partitions"]), doc
    assert sum(p["compared"] for p in doc["partitions"]) == 800


def test_lfs_and_hydrate_mirrors_verify_objects_and_name_an_overwritten_one(
    tmp_path: Path, kafka_cluster: KafkaCluster, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Envelopes' objects are fetched and checked; an object overwritten in S3 and deleted envelopes are named."""
    source, envelopes, plain = (big_topic(kafka_cluster, 2) for _ in range(3))
    now = int(time.time() * 1000)
    records = [Rec(i // 2 % 2, f"k{i}".encode(), os.urandom([300, 2 * MIB, 50, 3 * MIB][i % 4]),
                   (("content-type", b"application/x-test"),), now + i) for i in range(12)]  # fmt: skip
    produce_records(kafka_cluster, source, records)
    prefix = f"verify-{uuid.uuid4().hex[:8]}"
    lfs = {"s3": s3_section(s3_server, prefix)}
    offload = lfs_config(tmp_path / "lfs.yml", kafka_cluster, source, envelopes, lfs)
    assert RelayProcess(offload, "--stop-at-end").start().wait(120) == 0
    hydrate = hydrate_relay(tmp_path, kafka_cluster, envelopes, plain, s3_server, "--stop-at-end", name="hyd")
    assert hydrate.start().wait(120) == 0, hydrate.log_tail()

    code, doc = verify(capsys, offload, "--digest")
    assert code == 0 and sum(p["compared"] for p in doc["partitions"]) == 12, doc
    code, doc = verify(capsys, hydrate.config_path)
    assert code == 0 and sum(p["compared"] for p in doc["partitions"]) == 12, doc

    offloaded = [r for r in read_records(kafka_cluster, envelopes, 2) if detect(r.value) is not None]
    victim = next(r for r in offloaded if r.partition == 0)
    env = decode_envelope(victim.value or b"")
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=os.urandom(env.size))
    admin, head = AdminClient(kafka_cluster.client_conf()), TopicPartition(envelopes, 1, 2)
    admin.delete_records([head])[head].result(30)
    code, doc = verify(capsys, offload, "--digest")
    assert code == 1
    p0, p1 = doc["by"][(source, 0)], doc["by"][(source, 1)]
    assert p0["different"] == 1 and p0["missing"] == p0["extra"] == 0
    assert p0["first_different"]["what"] == f"value (object s3://{env.bucket}/{env.key}: checksum_mismatch)"
    assert (p1["missing"], p1["first_missing_source_offset"], p1["compared"]) == (2, 0, 4)
    code, doc = verify(capsys, hydrate.config_path)
    assert code == 0, "the hydrated copies do not depend on the objects any more"
