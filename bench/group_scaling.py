"""Scaling on one machine: ``run --workers N`` for N = 1, 2, 4, and what per-partition fencing costs.

Runs on fresh sandbox clusters. Contenders, alternated run by run (A B A B ...):
- ``single``: one instance, no group (one transactional producer for all partitions);
- ``workers-N``: one ``run --workers N`` command: N processes in one consumer group (one
  transactional producer per partition), N = 1 running in-process;
- ``group-N`` (when named): N separately started instances in one group, as before ``--workers``.

Each run relays the same topic from its beginning into a fresh target topic and is timed from
the first process start until the target holds every record (read back ``read_committed``). CPU
is every relay process's (the workers' parent waits for them, so theirs is included), from
``getrusage(RUSAGE_CHILDREN)``, start-up and drain included. Prints medians, ratios to
``workers-1`` and CPU seconds per 1M records; writes JSON when ``--out`` is given.

    python -m bench.group_scaling --records 1000000 --partitions 12 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.relay_launch import relay_env
from kafka_lfs_relay.sandbox import KafkaCluster, RelayProcess, Sandbox, cluster_entry
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
    workers: int | None = None,
) -> tuple[float, float]:
    config: dict[str, Any] = {
        "name": out_topic,
        "sources": [cluster_entry(source, "source")],
        "topics": [{"source": topic, "target": out_topic}],
        "target": cluster_entry(target, "target"),
        "log": {"format": "json", "level": "warning"},
    }
    if group:
        config["group"] = {"id": out_topic, "session_timeout": "6s"}
    path = root / f"{out_topic}.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    admin = AdminClient(target.client_conf())
    admin.create_topics([NewTopic(out_topic, partitions, 1)])[out_topic].result(60)
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    extra = ["--workers", str(workers)] if workers is not None else []
    relays = [
        RelayProcess(path, *extra, log_path=root / f"{out_topic}.{i}.log", name=f"{out_topic}.{i}", env=relay_env())
        for i in range(instances)
    ]
    for relay in relays:
        relay.start()
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
        for relay in relays:
            relay.signal(signal.SIGTERM)
        for relay in relays:
            if relay.wait(120) is None:
                relay.kill9()
                raise RuntimeError(f"{relay.name} did not stop within 120s; see {relay.log_path}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _contender(name: str) -> tuple[int, bool, int | None]:
    """(processes started, group mode, --workers) of a contender name."""
    if name == "single":
        return 1, False, None
    kind, _, n = name.partition("-")
    if kind == "workers" and n.isdigit():
        return 1, True, int(n)
    if kind == "group" and n.isdigit():
        return int(n), True, None
    raise SystemExit(f"unknown contender {name!r}: single, workers-N or group-N")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--contenders", default="single,workers-1,workers-2,workers-4")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    contenders = [(name, *_contender(name)) for name in names]
    root = Path(tempfile.mkdtemp(prefix="kfr-bench-group-"))
    box = Sandbox(root / "sandbox", clusters=2)
    box.up()
    try:
        source, target = box.clusters
        _feed(source, "bench", args.records, args.partitions, args.size)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            for name, n, group, workers in contenders:
                out_topic = f"out-{name}-{run}"
                elapsed, cpu = _run(
                    root, source, target, "bench", out_topic, n, group, args.records, args.partitions, workers
                )
                times[name].append(elapsed)
                cpus[name].append(cpu)
                print(f"run {run + 1} {name}: {elapsed:.1f}s, CPU {cpu:.1f}s", flush=True)
        base_name = "workers-1" if "workers-1" in times else names[0]
        base = statistics.median(times[base_name])
        mb = args.records * args.size / 1e6
        print(
            f"\n{args.records:,} x {args.size} B records, {args.partitions} partitions, "
            f"{args.runs} runs each, median; machine: {os.cpu_count()} cores"
        )
        print(
            f"{'contender':<10} {'seconds':>8} {'records/s':>11} {'MB/s':>7} {'vs ' + base_name:>13} "
            f"{'CPU s':>7} {'CPU s/1M':>9}"
        )
        result = {}
        for name in names:
            med = statistics.median(times[name])
            cpu = statistics.median(cpus[name])
            per_million = cpu * 1e6 / args.records
            result[name] = {
                "seconds": med,
                "records_per_s": args.records / med,
                f"vs_{base_name}": base / med,
                "cpu_s": cpu,
                "cpu_s_per_1m_records": per_million,
                "runs": times[name],
                "cpu_runs": cpus[name],
            }
            print(
                f"{name:<10} {med:8.1f} {args.records / med:11,.0f} {mb / med:7.1f} {base / med:13.2f} "
                f"{cpu:7.1f} {per_million:9.2f}"
            )
        if args.out:
            args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    finally:
        box.down()


if __name__ == "__main__":
    main()
