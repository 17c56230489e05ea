"""Group mode scaling: throughput with 1, 2 and 3 instances, and what per-partition fencing costs.

Runs on fresh sandbox clusters. Contenders, alternated run by run (A B A B ...):
- ``single``: one instance, no group (one transactional producer for all partitions);
- ``group-N``: N instances in one consumer group (one transactional producer per partition).

Each run relays the same topic from its beginning into a fresh target topic and is timed from
the first process start until the target holds every record. Prints medians and ratios to
``single``; writes JSON next to it when ``--out`` is given.

    python -m bench.group_scaling --records 300000 --partitions 12 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from kafka_lfs_relay.sandbox import KafkaCluster, Sandbox
from relay import logs


def _feed(cluster: KafkaCluster, topic: str, records: int, partitions: int, size: int) -> None:
    admin = AdminClient(cluster.client_conf())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    producer = Producer({**cluster.client_conf(), "linger.ms": 20, "compression.type": "lz4"})
    value = b"x" * size
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value, str(i).encode(), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def _run(
    root: Path,
    source: KafkaCluster,
    target: KafkaCluster,
    topic: str,
    out_topic: str,
    instances: int,
    group: bool,
    records: int,
    partitions: int,
) -> float:
    config: dict[str, Any] = {
        "name": out_topic,
        "sources": [{"name": "source", "bootstrap_servers": source.bootstrap_servers}],
        "topics": [{"source": topic, "target": out_topic}],
        "target": {"bootstrap_servers": target.bootstrap_servers},
        "log": {"format": "json", "level": "warning"},
    }
    if group:
        config["group"] = {"id": out_topic, "session_timeout": "6s"}
    path = root / f"{out_topic}.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    admin = AdminClient(target.client_conf())
    admin.create_topics([NewTopic(out_topic, partitions, 1)])[out_topic].result(60)
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kafka_lfs_relay", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=(root / f"{out_topic}.{i}.log").open("wb"),
        )
        for i in range(instances)
    ]
    # End offsets would count transaction markers too, so the records themselves are counted,
    # read_committed, as they arrive; the reader costs every contender the same.
    reader = Consumer({**target.client_conf(), "group.id": "bench-count", "isolation.level": "read_committed"})
    reader.assign([TopicPartition(out_topic, p, 0) for p in range(partitions)])
    seen = 0
    try:
        deadline = start + 900
        while seen < records and time.monotonic() < deadline:
            seen += sum(1 for m in reader.consume(10_000, 0.2) if m.error() is None)
        elapsed = time.monotonic() - start
    finally:
        reader.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(120)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr
    root = Path(tempfile.mkdtemp(prefix="kfr-bench-group-"))
    box = Sandbox(root / "sandbox", clusters=2)
    box.up()
    try:
        source, target = box.clusters
        _feed(source, "bench", args.records, args.partitions, args.size)
        contenders = [("single", 1, False), ("group-1", 1, True), ("group-2", 2, True), ("group-3", 3, True)]
        times: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
        for run in range(args.runs):
            for name, n, group in contenders:
                out_topic = f"out-{name}-{run}"
                times[name].append(
                    _run(root, source, target, "bench", out_topic, n, group, args.records, args.partitions)
                )
                print(f"run {run + 1} {name}: {times[name][-1]:.1f}s", flush=True)
        base = statistics.median(times["single"])
        mb = args.records * args.size / 1e6
        print(
            f"\n{args.records:,} x {args.size} B records, {args.partitions} partitions, "
            f"{args.runs} runs each, median; machine: {os.cpu_count()} cores"
        )
        print(f"{'contender':<10} {'seconds':>8} {'records/s':>11} {'MB/s':>7} {'vs single':>10}")
        result = {}
        for name, _, _ in contenders:
            med = statistics.median(times[name])
            result[name] = {"seconds": med, "records_per_s": args.records / med, "runs": times[name]}
            print(f"{name:<10} {med:8.1f} {args.records / med:11,.0f} {mb / med:7.1f} {base / med:10.2f}")
        if args.out:
            args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    finally:
        box.down()


if __name__ == "__main__":
    main()
