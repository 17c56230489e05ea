"""A source log truncated below the relay's position (an unclean leader election) is a gap under on_gap."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.sandbox import KafkaCluster
from tests.conftest import ClusterFactory, create_topic
from tests.integration.harness import RelayProcess, relay_config, wait_for, write_config
from tests.integration.hydrate_support import assert_records, produce_records, read_records, varied_records
from tests.integration.lfs_harness import free_port, scrape

pytestmark = pytest.mark.integration


def _truncate(cluster: KafkaCluster, topic: str, offset: int) -> int:
    """Cut partition 0's log of the stopped ``cluster`` at its first record batch at or after ``offset``, as an
    unclean leader election does to the records a lagging replica lacked; returns where the log now ends."""
    folder = cluster.spec.workdir / "data" / f"{topic}-0"
    (segment,) = folder.glob("*.log")
    data = segment.read_bytes()
    at = 0
    while at + 12 <= len(data):
        base, length = struct.unpack(">qi", data[at : at + 12])
        if base >= offset:
            break
        at += 12 + length
    assert 0 < at < len(data), "no record batch starts where the log is to be cut"
    with segment.open("r+b") as f:
        f.truncate(at)
    # Indexes and producer snapshots are rebuilt from the log on the next start, as after a crash.
    for path in folder.iterdir():
        if path.suffix in (".index", ".timeindex", ".snapshot", ".txnindex"):
            path.unlink()
    (cluster.spec.workdir / "data" / ".kafka_cleanshutdown").unlink(missing_ok=True)
    return base


def _copied(cluster: KafkaCluster, topic: str) -> int:
    """Committed records in ``topic``'s copy (0 until the relay has created it)."""
    if f"{topic}-copy" not in AdminClient(cluster.client_conf()).list_topics(timeout=30).topics:
        return 0
    return len(read_records(cluster, f"{topic}-copy", 1))


def test_a_source_log_truncated_below_the_relay_s_position_stops_it_or_is_skipped_and_counted(
    tmp_path: Path, cluster_factory: ClusterFactory, kafka_cluster: KafkaCluster
) -> None:
    """While two relays run, the source loses the last 200 records they copied and takes 300 new ones at those
    offsets: under on_gap fail the relay stops naming the range, under skip it counts 200 lost and relays from
    its position on; neither target loses or repeats a record it held."""
    source = cluster_factory("trunc")
    tag = uuid.uuid4().hex[:6]
    fail, skip = create_topic(source, f"fail-{tag}"), create_topic(source, f"skip-{tag}")
    old = varied_records(600, 0, 1)
    for topic in (fail, skip):
        for chunk in range(3):  # three producer flushes: record batches start at 0, 200 and 400
            produce_records(source, topic, old[chunk * 200 : (chunk + 1) * 200])
    port = free_port()
    relays = {}
    for topic, on_gap in ((fail, "fail"), (skip, "skip")):
        config = relay_config(
            [source], kafka_cluster, [{"source": topic, "target": f"{topic}-copy", "on_gap": on_gap}],
            name=f"{topic}-relay", **({"metrics": {"listen": f"127.0.0.1:{port}"}} if on_gap == "skip" else {}),
        )  # fmt: skip
        relays[on_gap] = RelayProcess(write_config(tmp_path / f"{on_gap}.yml", config)).start()
    for topic, relay in ((fail, relays["fail"]), (skip, relays["skip"])):
        wait_for(
            "600 records copied", lambda t=topic: len(read_records(kafka_cluster, f"{t}-copy", 1)) == 600, 60, relay
        )

    source.stop()
    ends = {topic: _truncate(source, topic, 400) for topic in (fail, skip)}
    assert ends == {fail: 400, skip: 400}
    source.start()
    new = varied_records(300, 10_000, 1)
    for topic in (fail, skip):
        produce_records(source, topic, new)  # offsets 400..699 now

    assert relays["fail"].wait(120) == 1, relays["fail"].log_tail()
    last = relays["fail"].log_text().strip().splitlines()[-1]
    assert last.startswith(
        f"kafka-lfs-relay: source trunc: topic {fail} partition 0: the log was truncated to offset 400, below the "
        "relay's position 600"
    ), last
    assert_records(old, read_records(kafka_cluster, f"{fail}-copy", 1))

    relay = relays["skip"]
    wait_for(
        "the records after the position", lambda: len(read_records(kafka_cluster, f"{skip}-copy", 1)) == 700, 90, relay
    )
    lost = 'kafka_lfs_relay_records_lost_total{partition="0",reason="truncation",topic="' + skip + '"}'
    assert scrape(port).get(lost) == 200.0
    assert relay.terminate() == 0, relay.log_tail()
    assert relay.log_text().count("the source's log was truncated below the relay's position") == 1
    assert_records(old + new[200:], read_records(kafka_cluster, f"{skip}-copy", 1))
