"""Scenario e: seconds from killing the active source to the first record relayed from the standby.

Three fresh sandbox clusters: ``east`` (the active source), ``west`` (the standby) and ``dst``.
Each run creates a fresh topic on both sources, writes the same records to both at ``--rate``
records/s (same partitions, same timestamps, so both hold the same offsets), and runs our relay
in failover mode. Once it relays steadily, the producer stops writing to east, east is killed
with SIGKILL, and the producer carries on writing to west only. Every record written after that
moment can only come from west, so the failover time is: the moment the first such record is
readable (``read_committed``) on the target, minus the moment of the kill. East is restarted
(same data, same ports) before the next run.

Run alone: ``python -m bench.failover --runs 2``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.clusters import RECORD_SIZE, create_topic, fresh_clusters, make_values
from bench.machine import machine_info
from bench.paths import WORK
from bench.procs import Child, exit_on_sigterm
from bench.relay_launch import relay_argv, relay_env, write_yaml
from bench.results import MIB, Result, common_args, log, markdown_table, median, now_text, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, cluster_entry
from relay import logs

SEQ = "bench-seq"


class DualProducer:
    """Writes record i to both sources (same partition, same timestamp) until told to drop east."""

    def __init__(self, east: KafkaCluster, west: KafkaCluster, topic: str, partitions: int, rate: int) -> None:
        conf = {"linger.ms": 5, "compression.type": "lz4", "acks": "all", "enable.idempotence": True}
        self.east: Producer | None = Producer({**east.client_conf(), **conf})
        self.west = Producer({**west.client_conf(), **conf})
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.value = make_values(4096)
        self.lock = threading.Lock()
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dual-producer", daemon=True)

    def start(self) -> DualProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        begin = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - begin) * self.rate)
            with self.lock:
                while self.seq < due:
                    i = self.seq
                    ts = int(time.time() * 1000)
                    kwargs: dict[str, Any] = {
                        "partition": i % self.partitions,
                        "headers": [(SEQ, str(i).encode())],
                        "timestamp": ts,
                    }
                    value = self.value(i)
                    if self.east is not None:
                        self.east.produce(self.topic, value, None, **kwargs)
                        self.east.poll(0)
                    self.west.produce(self.topic, value, None, **kwargs)
                    self.west.poll(0)
                    self.seq += 1
            time.sleep(0.002)

    def drop_east(self) -> int:
        """Stop writing to east; returns the last sequence number written there."""
        with self.lock:
            last = self.seq - 1
            east, self.east = self.east, None
        if east is not None:
            east.flush(2)
            with contextlib.suppress(Exception):
                east.purge()
        return last

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.west.flush(10)


class Arrivals:
    """A read_committed consumer of the target that notes when each sequence number arrives."""

    def __init__(self, dst: KafkaCluster, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {
                **dst.client_conf(),
                "group.id": f"fo-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.max_seq = -1
        self.count = 0
        self.threshold: int | None = None
        self.first_after: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fo-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            now = time.time()
            seq = next((int(v) for k, v in msg.headers() or () if k == SEQ and v is not None), -1)
            self.count += 1
            self.max_seq = max(self.max_seq, seq)
            if self.threshold is not None and seq > self.threshold and self.first_after is None:
                self.first_after = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def _switch_time(log_text: str) -> tuple[float | None, str]:
    """When (epoch seconds) the relay logged its switch, and the reason."""
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "switching source":
                stamp = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
                return stamp, str(event.get("reason"))
    return None, ""


def source_pool(args: argparse.Namespace) -> dict[str, Any]:
    return {"healthcheck_interval": f"{args.healthcheck_interval}s", "request_timeout": f"{args.request_timeout}s"}


def one_run(args: argparse.Namespace, run_no: int, clusters: dict[str, KafkaCluster], work: Any) -> dict[str, Any]:
    east, west, dst = clusters["east"], clusters["west"], clusters["dst"]
    if not east.alive():
        log("  restarting east")
        east.start()
    topic = f"fo-{run_no}"
    partitions = args.partitions
    for cluster in (east, west, dst):
        create_topic(cluster, topic, partitions)
    workdir = work / f"run-{run_no}"
    config = {
        "name": "bench-failover",
        "mode": "failover",
        "sources": [cluster_entry(east, "east"), cluster_entry(west, "west")],
        "source_pool": source_pool(args),
        "topics": [{"source": topic, "target": topic}],
        "target": {**cluster_entry(dst, "dst"), "batch": {"linger": args.linger}},
        "log": {"level": "info", "format": "json"},
    }
    path = write_yaml(workdir / "relay.yml", config)
    relay = Child("relay", relay_argv(path), workdir / "relay.log", relay_env())
    producer = DualProducer(east, west, topic, partitions, args.rate).start()
    arrivals = Arrivals(dst, topic, partitions)
    try:
        relay.start()
        deadline = time.monotonic() + 120
        while arrivals.count < args.rate * 3 or producer.seq - arrivals.max_seq > args.rate:
            if not relay.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"relay not relaying steadily; see {relay.log_path}\n{relay.log_tail()}")
            time.sleep(0.1)
        time.sleep(args.settle)
        before = relay.sample()
        last_east = producer.drop_east()
        arrivals.threshold = last_east
        killed = time.time()
        east.kill()
        log(f"  east killed after seq {last_east}")
        deadline = time.monotonic() + 120
        while arrivals.first_after is None:
            if not relay.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"no record from west within 120s; see {relay.log_path}\n{relay.log_tail()}")
            time.sleep(0.01)
        first = arrivals.first_after
        time.sleep(1.0)
        after = relay.sample()
    finally:
        producer.stop()
        arrivals.close()
        stats = relay.stop()
    switched, reason = _switch_time(relay.log_path.read_text(errors="replace"))
    return {
        "run": run_no,
        "failover_s": first - killed,
        "switch_logged_s": (switched - killed) if switched is not None else float("nan"),
        "reason": reason,
        "records_per_s": args.rate,
        "cpu_s": stats.cpu,
        "peak_rss_mib": max(after.peak_rss, stats.peak_rss) / MIB,
        "relay_seconds": stats.wall,
        "cpu_s_over_failover": after.cpu - before.cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="records/s written to both sources (default 2000)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--healthcheck-interval", type=float, default=2.0, help="seconds (the relay's default: 2)")
    parser.add_argument("--request-timeout", type=float, default=1.0, help="seconds (the relay's default: 1)")
    parser.add_argument("--linger", default="50ms", help="relay target.batch.linger (the relay's default)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of steady relaying before the kill")
    common_args(parser, runs=5)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--name", default="e_failover")
    args = parser.parse_args()
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr
    exit_on_sigterm()
    machine = machine_info()
    started = now_text()
    runs: list[dict[str, Any]] = []
    work = WORK / f"failover-runs-{uuid.uuid4().hex[:6]}"
    with fresh_clusters(["east", "west", "dst"], "failover") as clusters:
        try:
            for run_no in range(1, args.runs + 1):
                log(f"run {run_no}/{args.runs}")
                run = one_run(args, run_no, clusters, work)
                runs.append(run)
                log(
                    f"  failover {run['failover_s']:.2f}s (switch logged after {run['switch_logged_s']:.2f}s, "
                    f"reason {run['reason']})"
                )
        finally:
            if not args.keep_logs:
                shutil.rmtree(work, ignore_errors=True)
    limit = 2 * args.healthcheck_interval + 1
    failover = median([r["failover_s"] for r in runs])
    rows = [
        {
            "contender": "relay",
            "failover s (median)": failover,
            "min s": min(r["failover_s"] for r in runs),
            "max s": max(r["failover_s"] for r in runs),
            "switch logged s": median([r["switch_logged_s"] for r in runs]),
            "records/s": float(args.rate),
            "MiB/s": args.rate * RECORD_SIZE / MIB,
            "CPU s": median([r["cpu_s"] for r in runs]),
            "peak RSS MiB": median([r["peak_rss_mib"] for r in runs]),
            "runs": len(runs),
        }
    ]
    goals = [
        {
            "goal": f"failover within 2 x health-check interval + 1 s = {limit:.1f} s",
            "measured": f"median {failover:.2f} s over {len(runs)} runs "
            f"(health-check interval {args.healthcheck_interval:g} s, request timeout {args.request_timeout:g} s)",
            "met": failover <= limit,
        }
    ]
    result = Result(
        name=args.name,
        title=f"e. Failover: kill -9 of the active source -> first record relayed from the standby "
        f"(health-check interval {args.healthcheck_interval:g} s, request timeout {args.request_timeout:g} s)",
        columns=list(rows[0]),
        rows=rows,
        settings={
            "health-check interval": f"{args.healthcheck_interval:g} s",
            "relay source_pool": {
                **source_pool(args),
                "other keys": "defaults (unhealthy_after 2, min_dwell 30s, verify_on_switch true)",
            },
            "relay target.batch.linger": args.linger,
            "load": f"{args.rate} records/s of 1 KiB to both sources, {args.partitions} partitions",
            "kill": "SIGKILL of the active source's broker after "
            f"{args.settle:g} s of steady relaying; east restarted between runs",
            "measured": "kill -> first record written after the kill (so only on the standby) readable "
            "read_committed on the target",
            "runs": args.runs,
        },
        notes=[
            "'switch logged s' is the time from the kill to the relay's 'switching source' log line "
            "(detection); the rest is re-positioning on the standby, verifying it and the first commit.",
            "records/s is the offered load; CPU s and peak RSS are the relay process's whole run.",
        ],
        goals=goals,
        runs=runs,
        machine=machine,
        started=started,
        finished=now_text(),
        chart={"type": "runs", "value": "failover_s", "label": "failover s per run", "goal_line": limit},
    )
    write_result(result)
    print(markdown_table(result.columns, rows))
    for goal in goals:
        print(f"- {'MET' if goal['met'] else 'MISSED'}: {goal['goal']}: {goal['measured']}")


if __name__ == "__main__":
    main()
