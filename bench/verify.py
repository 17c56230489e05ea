"""Benchmark of ``kafka-lfs-relay verify`` on a clean mirror, next to reading both sides and nothing else.

Usage (from the repository root)::

    .venv/bin/python -m bench.verify                          # 100k records of 1 KiB, 6 partitions, 3 runs
    .venv/bin/python -m bench.verify --records 20000 --runs 1

What is measured
  A fresh sandbox cluster holds a source topic of ``--records`` records of ``--size`` bytes (with
  a header) over ``--partitions`` partitions; the relay mirrors it to a target topic with
  ``--stop-at-end`` (not timed). Then, each ``--runs`` times, alternately:

  * verify: ``kafka-lfs-relay verify --config F --json`` as its own process, once as it is and once
    with ``--digest``. Records/s is records compared over the seconds verify reports for its
    comparison (positions read, both sides read, fingerprinted and aligned); wall records/s counts
    from process start. Peak RSS and CPU seconds are the process's.
  * read both: verify's own reader (:class:`kafka_lfs_relay.verify.plan.RangeReader`) in this process
    reading every source and target partition to its end, touching nothing: what reading alone costs.

Results go to ``build/bench/results/verify.json`` (rendered by ``bench.report``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from typing import Any

from bench.clusters import create_topic, fill_topic
from bench.machine import machine_info
from bench.paths import WORK
from bench.procs import Child
from bench.relay_launch import relay_argv, relay_env, write_yaml
from bench.results import Result, common_args, log, markdown_table, now_text, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, cluster_entry, kafka_distribution
from kafka_lfs_relay.verify.plan import RangeReader
from relay import logs
from relay.settings import ClusterConfig
from targets.kafka.groups import TargetGroups

COLUMNS = ["contender", "records", "records/s", "wall records/s", "vs read both", "peak RSS MiB", "CPU s"]


def read_both(cluster: KafkaCluster, topics: list[str], partitions: int) -> tuple[int, float]:
    """(records read, seconds) for reading every partition of ``topics`` to its end with verify's own reader
    (read_committed, one partition after another), touching nothing: what reading alone costs."""
    ranges = TargetGroups(cluster_config(cluster), 30).log_range({(t, p) for t in topics for p in range(partitions)})
    reader = RangeReader(cluster_config(cluster))
    count = 0
    started = time.monotonic()
    try:
        for p in range(partitions):
            for topic in topics:
                start, end = ranges[(topic, p)]
                count += sum(1 for _ in reader.read(topic, p, start, end))
    finally:
        reader.close()
    return count, time.monotonic() - started


def cluster_config(cluster: KafkaCluster) -> ClusterConfig:
    return ClusterConfig(cluster.name, cluster.bootstrap_servers)


def _report(output: str) -> dict[str, Any]:
    """verify's JSON report: the object its output ends with."""
    start = output.rfind("\n{\n") + 1
    doc, _ = json.JSONDecoder().raw_decode(output[start:])
    assert isinstance(doc, dict)
    return doc


def run(args: argparse.Namespace) -> Result:
    root = WORK / f"verify-{uuid.uuid4().hex[:6]}"
    cluster = KafkaCluster.create("verify-bench", root / "kafka", kafka_distribution(), heap="2g")
    started, machine = now_text(), machine_info()
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    log(f"starting Kafka under {root}")
    cluster.start()
    try:
        source, target = "orders", "orders-dr"
        create_topic(cluster, source, args.partitions)
        log(f"writing {args.records:,} records of {args.size} bytes")
        fill_topic([cluster], source, args.records, args.partitions, args.size)
        config = write_yaml(
            root / "relay.yml",
            {
                "name": "verify-bench",
                "sources": [cluster_entry(cluster, "east")],
                "topics": [{"source": source, "target": target}],
                "target": {"type": "kafka", **cluster_entry(cluster, "dr")},
                "log": {"level": "warning", "format": "json"},
            },
        )
        log("mirroring it with the relay (not timed)")
        mirror = Child("mirror", relay_argv(config, "--stop-at-end"), root / "mirror.log", relay_env()).start()
        if mirror.wait(900).returncode != 0:
            raise RuntimeError(f"the mirror failed: {mirror.log_tail()}")
        samples: dict[str, list[dict[str, Any]]] = {"verify": [], "verify --digest": [], "read both": []}
        for i in range(args.runs):
            for name in ("verify", "verify --digest"):
                log(f"run {i + 1}/{args.runs}: {name}")
                extra = ["--digest"] if name.endswith("--digest") else []
                argv = [*relay_argv(config)[:-3], "verify", "--config", str(config), "--json", *extra]
                child = Child(name, argv, root / f"{name.replace(' ', '')}-{i}.log", relay_env()).start()
                stats = child.wait(900)
                if stats.returncode != 0:
                    raise RuntimeError(f"{name} exited {stats.returncode}: {child.log_tail()}")
                report = _report(child.log_path.read_text(encoding="utf-8"))
                compared = sum(p["compared"] for p in report["partitions"])
                samples[name].append({"records": compared, "rate": compared / report["seconds"],
                                      "wall": compared / stats.wall, "rss": stats.peak_rss / 2**20,
                                      "cpu": stats.cpu})  # fmt: skip
            log(f"run {i + 1}/{args.runs}: read both")
            count, seconds = read_both(cluster, [source, target], args.partitions)
            samples["read both"].append({"records": count // 2, "rate": count / 2 / seconds})
            runs.append({name: values[-1] for name, values in samples.items()})
        base = statistics.median(s["rate"] for s in samples["read both"])
        for name, values in samples.items():
            rate = statistics.median(v["rate"] for v in values)
            rows.append({
                "contender": name, "records": values[0]["records"], "records/s": rate,
                "wall records/s": statistics.median(v.get("wall", v["rate"]) for v in values),
                "vs read both": rate / base if base else float("nan"),
                "peak RSS MiB": max((v.get("rss", float("nan")) for v in values), default=float("nan")),
                "CPU s": statistics.median(v.get("cpu", float("nan")) for v in values),
            })  # fmt: skip
    finally:
        cluster.stop()
    return Result(
        name="verify",
        title=f"verify on a clean mirror of {args.records:,} records: records/s next to reading both sides",
        columns=COLUMNS,
        rows=rows,
        settings={"records": args.records, "record_size": args.size, "partitions": args.partitions, "runs": args.runs},
        notes=[
            "records/s: source records compared (each read on both sides, fingerprinted and aligned) per second "
            "of verify's comparison; wall: from process start to exit.",
            "read both: verify's own reader reading every source and target partition to its end, read_committed, "
            "with no work per record; its records/s counts source records, as verify does.",
            "--digest keeps digests only; without it values up to 64 KiB are kept to say where two first differ.",
        ],
        runs=runs,
        machine=machine,
        started=started,
        finished=now_text(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024, help="record value size in bytes")
    parser.add_argument("--partitions", type=int, default=6)
    common_args(parser, 3)
    args = parser.parse_args(argv)
    logs.configure("warning")
    result = run(args)
    print(markdown_table(result.columns, result.rows))
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
