"""MirrorMaker 2 as a contender: a dedicated ``connect-mirror-maker`` with an mm2.properties file.

It runs ``org.apache.kafka.connect.mirror.MirrorMaker --clusters dst mm2.properties`` from the
``connect-mirror`` artifact of the sandbox's Kafka version, with the JVM options of Kafka's own
``connect-mirror-maker.sh`` (``-Xms256M -Xmx2G`` and kafka-run-class.sh's performance options).
Every property it runs with is in :func:`mm2_properties` and is printed under the report's tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.clusters import CONSUMER_FETCH, PRODUCER_BATCHING, OffsetWatcher
from bench.procs import Child, ProcStats, java_argv, write_log4j
from kafka_lfs_relay.sandbox import KafkaCluster

MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
# connect-mirror-maker.sh: KAFKA_HEAP_OPTS="-Xms256M -Xmx2G".
HEAP = ("-Xms256M", "-Xmx2G")


def mm2_properties(
    src: KafkaCluster, dst: KafkaCluster, topics: str, tasks: int, exactly_once: bool = False
) -> dict[str, str]:
    """Every MirrorMaker 2 setting of the benchmark (cluster aliases ``src`` and ``dst``)."""
    props = {
        "clusters": "src, dst",
        "src.bootstrap.servers": src.bootstrap_servers,
        "dst.bootstrap.servers": dst.bootstrap_servers,
        "src->dst.enabled": "true",
        "dst->src.enabled": "false",
        "src->dst.topics": topics,
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "tasks.max": str(tasks),
        # Only the records: no heartbeats, checkpoints, offset syncs, group/config/ACL syncing.
        # (With offset syncs off, MM2 4.1 rejects any offset-syncs.topic.* setting, so there is none.)
        "emit.heartbeats.enabled": "false",
        "emit.checkpoints.enabled": "false",
        "emit.offset-syncs.enabled": "false",
        "sync.group.offsets.enabled": "false",
        "refresh.groups.enabled": "false",
        "sync.topic.configs.enabled": "false",
        "sync.topic.acls.enabled": "false",
        "refresh.topics.enabled": "true",
        "refresh.topics.interval.seconds": "10",
        # Single-broker sandbox: replication factor 1 everywhere.
        "replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "config.storage.replication.factor": "1",
        "checkpoints.topic.replication.factor": "1",
        "heartbeats.topic.replication.factor": "1",
        # The same producer batching as our relay's target producer, idempotent like ours
        # (Connect's own default of max.in.flight.requests.per.connection=1 is lifted to 5,
        # which idempotence keeps in order).
        **{f"dst.producer.{k}": v for k, v in PRODUCER_BATCHING.items()},
        "dst.producer.enable.idempotence": "true",
        "dst.producer.max.in.flight.requests.per.connection": "5",
        # The same fetch sizes as our relay's source consumer.
        **{f"src.consumer.{k}": v for k, v in CONSUMER_FETCH.items()},
        "src.consumer.max.poll.records": "2000",
        # Exactly-once source support (KIP-618) is off by default; it is stated in the report. In
        # dedicated mode it is a setting of the target cluster's workers.
        "dst.exactly.once.source.support": "enabled" if exactly_once else "disabled",
        "dedicated.mode.enable.internal.rest": "false",
    }
    return props


def describe(props: dict[str, str]) -> dict[str, str]:
    """The settings for the report (bootstrap addresses left out: they change every run)."""
    return {k: v for k, v in props.items() if not k.endswith("bootstrap.servers")}


class MirrorMaker:
    """One dedicated MirrorMaker 2 process."""

    def __init__(self, workdir: Path, props: dict[str, str], name: str = "mm2") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.props_path = workdir / f"{name}.properties"
        self.props_path.write_text("".join(f"{k} = {v}\n" for k, v in props.items()), encoding="utf-8")
        log4j = write_log4j(
            workdir / f"{name}-log4j2.properties",
            workdir / f"{name}.log",
            # INFO for the client config dumps, so the settings actually used can be checked in the log.
            info_loggers=("org.apache.kafka.connect.mirror", "org.apache.kafka.clients", "org.apache.kafka.common"),
        )
        argv = java_argv(MAIN_CLASS, [str(self.props_path), "--clusters", "dst"], HEAP, log4j)
        self.child = Child(name, argv, workdir / f"{name}.out")

    def start(self) -> MirrorMaker:
        """Start MirrorMaker 2."""
        self.child.start()
        return self

    def wait_for_total(self, watcher: OffsetWatcher, total: int, timeout: float, poll: float = 0.1) -> ProcStats:
        """Wait until the target holds ``total`` records; CPU/RSS sampled at that moment."""
        deadline = time.monotonic() + timeout
        while True:
            if watcher.total() >= total:
                return self.child.sample()
            if not self.child.alive():
                raise RuntimeError(f"MirrorMaker 2 exited early; see {self.child.log_path}:\n{self.child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"MirrorMaker 2 did not copy {total} records within {timeout:.0f}s")
            time.sleep(poll)

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` while MirrorMaker 2 runs."""
        deadline = time.monotonic() + timeout
        while not check():
            if not self.child.alive():
                raise RuntimeError(f"MirrorMaker 2 exited early; see {self.child.log_path}:\n{self.child.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"MirrorMaker 2: {what} not within {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self) -> ProcStats:
        """Stop it (SIGTERM, then SIGKILL)."""
        return self.child.stop(grace=30)
