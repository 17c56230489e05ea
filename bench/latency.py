"""Scenario b: end-to-end latency at a fixed rate, our relay against MirrorMaker 2.

Two fresh sandbox clusters, warmed up by an unmeasured run. In every round each contender in turn
(each round starting with the next one) relays a fresh topic while a paced producer writes
``--rate`` 1 KiB records/s to the source for ``--warmup`` + ``--duration`` seconds, and a
``read_committed`` consumer on the target notes when each record becomes readable there. A
record's latency is that moment minus the moment its ``produce()`` was called (nanosecond clock,
carried in a header); records from the warm-up are left out. Both contenders see exactly the same
producer and consumer settings.

Run alone: ``python -m bench.latency --duration 10 --runs 1``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.clusters import RECORD_SIZE, create_topic, delete_topics, fresh_clusters, make_values
from bench.machine import machine_info
from bench.mirrormaker import MirrorMaker, describe, mm2_properties
from bench.paths import WORK
from bench.procs import Child, ProcStats, exit_on_sigterm
from bench.relay_launch import (
    relay_argv,
    relay_env,
    revision_argv,
    revision_env,
    revision_tree,
    write_yaml,
)
from bench.results import MIB, Result, common_args, log, markdown_table, median, now_text, percentile, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, cluster_entry
from relay import logs

TOPIC = "lat"
# mm2-eos: MirrorMaker 2 with exactly-once source support, as our relay is exactly-once.
CONTENDERS = ("relay", "mm2", "mm2-eos")
T_HEADER = "bench-t"
LOAD_PRODUCER = {"linger.ms": 1, "compression.type": "lz4", "acks": "all", "enable.idempotence": True}


class Probe:
    """The paced source producer and the target consumer that measures when records arrive."""

    def __init__(self, src: KafkaCluster, dst: KafkaCluster, partitions: int, rate: int) -> None:
        self.partitions = partitions
        self.rate = rate
        self.producer = Producer({**src.client_conf(), **LOAD_PRODUCER})
        self.consumer = Consumer(
            {
                **dst.client_conf(),
                "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
            }
        )
        self.consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.arrivals: list[tuple[int, int]] = []  # (sent ns, received ns)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="lat-consumer", daemon=True)
        self._thread.start()
        self.value = make_values(4096)

    def _consume(self) -> None:
        poll, clock = self.consumer.poll, time.time_ns
        while not self._stop.is_set():
            msg = poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            now = clock()
            for key, value in msg.headers() or ():
                if key == T_HEADER and value is not None:
                    self.arrivals.append((struct.unpack(">q", value)[0], now))

    def send(self, count: int) -> None:
        """``count`` records as fast as possible (used as a readiness probe)."""
        for i in range(count):
            self._produce(i)
        self.producer.flush(30)

    def _produce(self, i: int) -> None:
        stamp = time.time_ns()
        self.producer.produce(
            TOPIC,
            self.value(i),
            None,
            partition=i % self.partitions,
            headers=[(T_HEADER, struct.pack(">q", stamp))],
            timestamp=stamp // 1_000_000,
        )
        self.sent += 1

    def paced(self, seconds: float) -> tuple[int, int]:
        """Produce at ``rate`` for ``seconds``; returns the (start, end) of the load in ns."""
        start = time.time_ns()
        begin = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - begin
            if elapsed >= seconds:
                break
            due = int(elapsed * self.rate)
            while sent < due:
                self._produce(sent)
                sent += 1
            self.producer.poll(0)
            time.sleep(0.0005)
        self.producer.flush(30)
        return start, time.time_ns()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` records have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()
        self.producer.flush(5)


def relay_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": "single",
        "target": {
            "type": "kafka",
            "batch": {"max_records": args.batch_records, "max_bytes": args.batch_bytes, "linger": args.linger},
        },
        "log": {"level": "info", "format": "json"},
    }


def one_run(
    args: argparse.Namespace, contender: str, src: KafkaCluster, dst: KafkaCluster, workdir: Path
) -> dict[str, Any]:
    partitions = args.partitions
    delete_topics(src)
    delete_topics(dst)
    create_topic(src, TOPIC, partitions)
    create_topic(dst, TOPIC, partitions)
    workdir.mkdir(parents=True, exist_ok=True)
    child: Child
    mm2: MirrorMaker | None = None
    if contender in ("relay", "candidate"):
        config = {
            "name": "bench-latency",
            **relay_settings(args),
            "sources": [cluster_entry(src, "src")],
            "topics": [{"source": TOPIC, "target": TOPIC}],
        }
        config["target"] = {**config["target"], **cluster_entry(dst, "dst")}
        path = write_yaml(workdir / "relay.yml", config)
        argv = relay_argv(path)
        env, cwd = relay_env(), None
        if contender == "candidate" and args.candidate_rev:
            # An earlier revision's relay, same config as "relay": A/B in one invocation.
            cwd = revision_tree(args.candidate_rev)
            argv, env = revision_argv(cwd, path), revision_env(cwd)
        elif contender == "candidate":
            argv[2] = args.candidate_module  # the same CLI from another module: a candidate change
        child = Child(contender, argv, workdir / "relay.log", env=env, cwd=cwd)
    else:
        mm2 = MirrorMaker(workdir, mm2_properties(src, dst, TOPIC, partitions, exactly_once=contender == "mm2-eos"))
        child = mm2.child
    probe = Probe(src, dst, partitions, args.rate)
    try:
        child.start()
        # Ready once a first record of every partition came through (MirrorMaker 2 takes a while).
        probe.send(partitions)
        if not probe.wait_for(partitions, 180):
            raise RuntimeError(f"{contender} relayed nothing within 180s; see {child.log_path}\n{child.log_tail()}")
        time.sleep(1.0)
        log(f"  {contender} is relaying; load {args.rate}/s for {args.warmup + args.duration:.0f}s")
        before: ProcStats | None = None
        load_started = time.monotonic()

        def sample_after_warmup() -> None:
            nonlocal before
            time.sleep(args.warmup)
            before = child.sample()

        sampler = threading.Thread(target=sample_after_warmup)
        sampler.start()
        start_ns, end_ns = probe.paced(args.warmup + args.duration)
        sampler.join()
        total = probe.sent
        arrived = probe.wait_for(total, 60)
        after = child.sample()
        assert before is not None
        window_start = start_ns + int(args.warmup * 1e9)
        lat = sorted((recv - sent) / 1e6 for sent, recv in probe.arrivals if sent >= window_start)
        measured = sum(1 for sent, _ in probe.arrivals if sent >= window_start)
        seconds = (end_ns - window_start) / 1e9
        return {
            "contender": contender,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "max_ms": lat[-1] if lat else float("nan"),
            "records": measured,
            "records_per_s": measured / seconds,
            "cpu_s": after.cpu - before.cpu,
            "peak_rss_mib": after.peak_rss / MIB,
            "all_arrived": arrived,
            "load_seconds": time.monotonic() - load_started,
        }
    finally:
        probe.close()
        if mm2 is not None:
            mm2.stop()
        else:
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="records/s (default 5000)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--warmup-runs", type=int, default=1, help="unmeasured runs on the fresh clusters first (default 1)"
    )
    common_args(parser, runs=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--batch-records", type=int, default=20_000, help="relay target.batch.max_records")
    parser.add_argument("--batch-bytes", default="64MiB", help="relay target.batch.max_bytes (its default: 64MiB)")
    parser.add_argument("--linger", default="5ms", help="relay target.batch.linger")
    parser.add_argument(
        "--candidate-module",
        help="also run contender 'candidate': our relay's CLI from this module (a candidate change to A/B)",
    )
    parser.add_argument(
        "--candidate-rev",
        help="also run contender 'candidate': the relay of this git revision (e.g. the last release), A/B",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--name", default="b_latency")
    args = parser.parse_args()
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr
    exit_on_sigterm()
    contenders = [c for c in args.contenders.split(",") if c]
    if (args.candidate_module or args.candidate_rev) and "candidate" not in contenders:
        contenders.append("candidate")
    machine = machine_info()
    started = now_text()
    runs: list[dict[str, Any]] = []
    work = WORK / f"latency-runs-{uuid.uuid4().hex[:6]}"
    with fresh_clusters(["src", "dst"], "latency") as clusters:
        src, dst = clusters["src"], clusters["dst"]
        mm2_props = mm2_properties(src, dst, TOPIC, args.partitions)
        try:
            if args.warmup_runs:
                # Freshly started brokers are slow for their first minute (the JVM compiles their hot
                # paths as they go): whoever ran first was measured against cold brokers.
                log(f"warm-up: {contenders[0]} once on the fresh clusters, not counted")
                for _ in range(args.warmup_runs):
                    one_run(args, contenders[0], src, dst, work / "warm-up")
            for round_no in range(1, args.runs + 1):
                # Each round starts with the next contender, so none is always first or last.
                shift = (round_no - 1) % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    log(f"round {round_no}/{args.runs}: {contender}")
                    run = one_run(args, contender, src, dst, work / f"{round_no}-{contender}")
                    runs.append(run)
                    log(
                        f"  {contender}: p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                        f"{run['records_per_s']:,.0f} records/s, CPU {run['cpu_s']:.1f}s, "
                        f"peak RSS {run['peak_rss_mib']:.0f} MiB"
                    )
        finally:
            if not args.keep_logs:
                shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in contenders:
        mine = [r for r in runs if r["contender"] == name]
        rate = median([r["records_per_s"] for r in mine])
        rows.append(
            {
                "contender": name,
                "p50 ms": median([r["p50_ms"] for r in mine]),
                "p99 ms": median([r["p99_ms"] for r in mine]),
                "records/s": rate,
                "MiB/s": rate * RECORD_SIZE / MIB,
                "CPU s": median([r["cpu_s"] for r in mine]),
                "peak RSS MiB": median([r["peak_rss_mib"] for r in mine]),
                "runs": len(mine),
            }
        )
    by = {r["contender"]: r for r in rows}
    goals = []
    if "relay" in by and "mm2" in by:
        goals.append(
            {
                "goal": "p99 latency no worse than MirrorMaker 2's",
                "measured": f"{by['relay']['p99 ms']:.1f} vs {by['mm2']['p99 ms']:.1f} ms",
                "met": by["relay"]["p99 ms"] <= by["mm2"]["p99 ms"],
            }
        )
    if "relay" in by and "mm2-eos" in by:
        goals.append(
            {
                "goal": "p99 latency no worse than MirrorMaker 2's with exactly-once on (like ours)",
                "measured": f"{by['relay']['p99 ms']:.1f} vs {by['mm2-eos']['p99 ms']:.1f} ms",
                "met": by["relay"]["p99 ms"] <= by["mm2-eos"]["p99 ms"],
            }
        )
    result = Result(
        name=args.name,
        title=f"b. Latency: end-to-end p50/p99 at a fixed {args.rate:,} records/s (1 KiB records)",
        columns=["contender", "p50 ms", "p99 ms", "records/s", "MiB/s", "CPU s", "peak RSS MiB", "runs"],
        rows=rows,
        settings={
            "rate": f"{args.rate} records/s, 1 KiB values, {args.partitions} partitions, round-robin",
            "per run": f"{args.warmup:.0f}s warm-up (not measured), then {args.duration:.0f}s measured",
            "runs per contender (each round starts with the next contender)": args.runs,
            "warm-up runs (unmeasured, on the fresh clusters)": args.warmup_runs,
            "latency": "from the produce() call on the source (time in a header) to the record being "
            "returned by a read_committed consumer of the target (consumer.poll, fetch.wait.max.ms=100)",
            "load producer": LOAD_PRODUCER,
            "relay": relay_settings(args),
            "mm2 (mm2.properties)": describe(mm2_props),
            "mm2 exactly-once": "mm2: off (dst.exactly.once.source.support=disabled, the default), at-least-once; "
            "mm2-eos: dst.exactly.once.source.support=enabled (a transaction per poll, KIP-618); "
            "our relay commits a transaction per batch",
            "CPU s": "the contender's CPU seconds during the measured window only",
        },
        notes=[
            "Every run starts the contender on fresh topics and waits until it relays before the load starts, "
            "so MirrorMaker 2's start-up is not in these figures."
        ],
        goals=goals,
        runs=runs,
        machine=machine,
        started=started,
        finished=now_text(),
        chart={"type": "bars", "values": ["p50 ms", "p99 ms"], "label": "latency ms (median of runs)"},
    )
    write_result(result)
    print(markdown_table(result.columns, rows))
    for goal in goals:
        print(f"- {'MET' if goal['met'] else 'MISSED'}: {goal['goal']}: {goal['measured']}")


if __name__ == "__main__":
    main()
