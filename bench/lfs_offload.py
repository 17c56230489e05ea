"""Benchmark of the offloading target: relay MB/s next to the raw S3 PUT rate, and the relay's peak RSS.

Usage (from the repository root)::

    .venv/bin/python -m bench.lfs_offload                      # 512 MiB of 8 MiB and of 64 MiB records
    .venv/bin/python -m bench.lfs_offload --rss-run            # ...and 2 GiB of 64 MiB records for peak RSS
    .venv/bin/python -m bench.lfs_offload --sizes 8 --total-mib 256 --concurrency 4

What is measured
  A sandbox (one KRaft cluster and one SeaweedFS server on this machine) is started under
  ``--workdir`` (removed at the end unless ``--keep``; objects are deleted after each run). For
  each record size, ``--total-mib`` of incompressible records are produced to a source topic
  first (not timed). Then:

  * relay: ``kafka-lfs-relay run --stop-at-end`` with ``target.type: lfs`` mirrors the topic,
    offloading every record (``upload_concurrency`` = ``--concurrency``, parts of
    ``--part-size``). *wall* MB/s is payload bytes over the time from process start to exit
    (imports, metadata and producer initialisation included); *steady* MB/s is the payload of
    all records but the first over the time between the first and the last envelope appended to
    the target (the target topic uses LogAppendTime). Peak RSS and CPU seconds of the relay
    process are its ``VmHWM`` (``/proc/<pid>/status``, sampled every 20 ms until it exits) and
    ``ru_utime + ru_stime`` from ``wait4``. (``wait4``'s ``ru_maxrss`` is not used: Linux counts in
    it the resident memory of the benchmark process itself at the moment of ``fork``.)
  * raw PUT: the same bytes, one ``put_object`` per record, from ``--concurrency`` threads with
    one boto3 client made exactly like the relay's (``lfs.s3.make_client``), to the same
    SeaweedFS. MB/s over the wall time of all PUTs.

  ``--rss-run`` relays ``--rss-total-mib`` of 64 MiB records ``--runs`` times under each
  ``max_in_flight`` of ``--rss-max-in-flight`` and reports the relay's peak RSS (min, median,
  max) next to a *base* run (the same relay passing a few small records through), as
  ``base + k x record size``.

Results are printed as a table and written to ``build/bench/results/lfs_offload.json`` in the
shape the other benchmark scenarios use (name, title, columns, rows, settings, notes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.procs import Child
from bench.relay_launch import relay_argv, relay_env
from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster, cluster_entry, kafka_distribution
from kafka_lfs_relay.sandbox.s3 import S3Server
from lfs import decode_envelope, is_lfs_envelope
from lfs.s3 import S3Settings, make_client
from relay import logs
from relay.units import parse_size

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
MAX_MESSAGE = 100 * MIB
RELAY_TIMEOUT = 3600.0


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class RelayRun:
    """One relay process: bytes moved, wall and steady seconds, CPU seconds, peak RSS bytes."""

    records: int
    payload: int
    wall: float
    steady: float
    cpu: float
    peak_rss: int


class Bench:
    """The sandbox and the steps of the benchmark."""

    def __init__(self, workdir: Path, concurrency: int, part_size: int) -> None:
        self.workdir = workdir
        self.concurrency = concurrency
        self.part_size = part_size
        self.batch_max_bytes: str | None = None
        self.cluster: KafkaCluster | None = None
        self.s3: S3Server | None = None

    # -- sandbox ------------------------------------------------------------------------------------
    def up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log(f"starting Kafka and SeaweedFS under {self.workdir}")
        # 64 MiB records in produce requests need more than the sandbox's default 512 MiB of heap.
        kafka_dir = self.workdir / f"kafka-{uuid.uuid4().hex[:6]}"
        self.cluster = KafkaCluster.create("lfs-bench", kafka_dir, kafka_distribution(), heap="2g")
        self.cluster.start()
        self.s3 = S3Server(self.workdir / f"s3-{uuid.uuid4().hex[:6]}")
        self.s3.start()

    def forget(self, prefix: str) -> None:
        """Delete the objects under ``prefix`` and have SeaweedFS reclaim their space (a 2 GiB run leaves 2 GiB)."""
        settings = self.settings()
        client = make_client(settings)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys, "Quiet": True})
        ports = self._s3().ports or {}
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{ports.get('master')}/vol/vacuum?garbageThreshold=0.01"
            urllib.request.urlopen(url, timeout=120).read()

    def down(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def _cluster(self) -> KafkaCluster:
        assert self.cluster is not None
        return self.cluster

    def _s3(self) -> S3Server:
        assert self.s3 is not None
        return self.s3

    def settings(self) -> S3Settings:
        info = self._s3().info()
        return S3Settings(
            bucket=info["bucket"],
            endpoint_url=info["endpoint_url"],
            region=info["region"],
            path_style=True,
            access_key_id=info["access_key_id"],
            secret_access_key=info["secret_access_key"],
        )

    # -- data ---------------------------------------------------------------------------------------
    def topic(self, name: str, log_append_time: bool = False) -> str:
        config = {"max.message.bytes": str(MAX_MESSAGE)}
        if log_append_time:
            config["message.timestamp.type"] = "LogAppendTime"
        admin = AdminClient(self._cluster().client_conf())
        admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(60)
        return name

    def produce(self, topic: str, values: list[bytes]) -> None:
        producer = FeedProducer(
            {
                **self._cluster().client_config(),
                "message.max.bytes": MAX_MESSAGE,
                "linger.ms": 5,
                "queue.buffering.max.kbytes": 1024 * 1024,
                "max.in.flight.requests.per.connection": 1,
            }
        )
        for i, value in enumerate(values):
            producer.send(topic, value, f"k{i}".encode(), partition=0)
            producer.poll(0)
        producer.flush_all(300)

    # -- the relay ----------------------------------------------------------------------------------
    def relay(
        self, name: str, source: str, target: str, prefix: str, max_in_flight: str, threshold: str = "0"
    ) -> RelayRun:
        cluster = self._cluster()
        settings = self.settings()
        config = {
            "name": name,
            "sources": [cluster_entry(cluster, "source")],
            "topics": [{"source": source, "target": target}],
            "max_in_flight": max_in_flight,
            "target": {
                "type": "lfs",
                **cluster_entry(cluster, "target"),
                **({"batch": {"max_bytes": self.batch_max_bytes}} if self.batch_max_bytes else {}),
                "lfs": {
                    "threshold": threshold,
                    "upload_concurrency": self.concurrency,
                    "part_size": self.part_size,
                    "s3": {
                        "endpoint_url": settings.endpoint_url,
                        "region": settings.region,
                        "bucket": settings.bucket,
                        "prefix": prefix,
                        "path_style": True,
                        "access_key_id": "${BENCH_S3_KEY}",
                        "secret_access_key": "${BENCH_S3_SECRET}",
                    },
                },
            },
            "log": {"level": "warning", "format": "json"},
        }
        path = self.workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        env = {
            **relay_env(),
            "BENCH_S3_KEY": settings.access_key_id or "",
            "BENCH_S3_SECRET": settings.secret_access_key or "",
        }
        # Child samples VmHWM until the exit and takes the CPU from wait4 (whose ru_maxrss would
        # count this process's RSS at fork).
        child = Child(name, relay_argv(path, "--stop-at-end"), self.workdir / f"{name}.log", env).start()
        stats = child.wait(RELAY_TIMEOUT)
        if stats.returncode != 0:
            raise RuntimeError(f"relay {name} exited with {stats.returncode}; see {child.log_path}")
        records, payload, first, last = self._read_envelopes(target)
        return RelayRun(
            records=records,
            payload=payload,
            wall=stats.wall,
            steady=(last - first) / 1000.0 if records > 1 and last > first else float("nan"),
            cpu=stats.cpu,
            peak_rss=stats.peak_rss,
        )

    def _read_envelopes(self, topic: str) -> tuple[int, int, int, int]:
        """(records, payload bytes, first and last append time in ms) of a target topic."""
        consumer = Consumer(
            {
                **self._cluster().client_conf(),
                "group.id": "lfs-bench",
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        records = payload = 0
        first = last = 0
        done = False
        while not done:
            for msg in consumer.consume(1000, 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done = True
                        continue
                    raise RuntimeError(err.str())
                value = msg.value() or b""
                size = decode_envelope(value).size if is_lfs_envelope(value) else len(value)
                ts = msg.timestamp()[1]
                if records == 0:
                    first = ts
                last = ts
                records += 1
                payload += size
        consumer.close()
        return records, payload, first, last

    # -- raw boto3 ----------------------------------------------------------------------------------
    def raw_put(self, prefix: str, values: list[bytes]) -> float:
        """Seconds to PUT every value once, ``concurrency`` at a time, with the relay's client."""
        settings = self.settings()
        client = make_client(settings)
        bucket = settings.bucket

        def put(i: int) -> None:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{i}", Body=values[i])

        started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(put, range(len(values))))
        return time.monotonic() - started


def mbs(nbytes: int, seconds: float) -> float:
    """MiB per second."""
    return nbytes / MIB / seconds if seconds and seconds == seconds else float("nan")


def table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """A markdown table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    """The median, NaN for none."""
    return statistics.median(values) if values else float("nan")


def throughput(bench: Bench, size_mib: int, total_mib: int, runs: int, max_in_flight: str) -> dict[str, Any]:
    """Relay and raw PUT of ``total_mib`` of ``size_mib`` records, alternately ``runs`` times; medians."""
    count = max(1, total_mib // size_mib)
    log(f"{count} records of {size_mib} MiB: generating and producing")
    values = [os.urandom(size_mib * MIB) for _ in range(count)]
    tag = f"s{size_mib}-{uuid.uuid4().hex[:6]}"
    src = bench.topic(f"src-{tag}")
    bench.produce(src, values)
    payload = count * size_mib * MIB
    steady_payload = (count - 1) * size_mib * MIB
    raw_rates: list[float] = []
    relay_runs: list[RelayRun] = []
    for n in range(runs):
        log(f"{size_mib} MiB run {n + 1}/{runs}: raw boto3 PUT, {bench.concurrency} threads")
        raw_rates.append(mbs(payload, bench.raw_put(f"raw/{tag}-{n}", values)))
        bench.forget(f"raw/{tag}-{n}")
        log(f"{size_mib} MiB run {n + 1}/{runs}: relay")
        dst = bench.topic(f"dst-{tag}-{n}", log_append_time=True)
        run = bench.relay(f"relay-{tag}-{n}", src, dst, f"relay/{tag}-{n}", max_in_flight)
        bench.forget(f"relay/{tag}-{n}")
        assert run.records == count and run.payload == payload, run
        relay_runs.append(run)
        log(
            f"{size_mib} MiB run {n + 1}: raw {raw_rates[-1]:.1f} MB/s, relay {mbs(steady_payload, run.steady):.1f} "
            f"MB/s steady, {mbs(payload, run.wall):.1f} wall, peak RSS {run.peak_rss / MIB:.0f} MiB"
        )
    steady = median([mbs(steady_payload, r.steady) for r in relay_runs])
    raw = median(raw_rates)
    return {
        "record size": f"{size_mib} MiB",
        "records": count,
        "relay MB/s (steady)": steady,
        "relay MB/s (wall)": median([mbs(payload, r.wall) for r in relay_runs]),
        "raw PUT MB/s": raw,
        "relay / raw": steady / raw,
        "relay peak RSS MiB": max(r.peak_rss for r in relay_runs) / MIB,
        "relay CPU s": median([r.cpu for r in relay_runs]),
    }


def rss_runs(bench: Bench, total_mib: int, budgets: list[str], runs: int) -> list[dict[str, Any]]:
    """Peak RSS relaying ``total_mib`` of 64 MiB records, ``runs`` times per ``max_in_flight``, next to a base run."""
    count = max(1, total_mib // 64)
    log(f"RSS runs: producing {count} records of 64 MiB")
    src = bench.topic(f"src-rss-{uuid.uuid4().hex[:6]}")
    produced = 0  # in slices of 4 records, to keep this process small
    while produced < count:
        n = min(4, count - produced)
        bench.produce(src, [os.urandom(64 * MIB) for _ in range(n)])
        produced += n
    small = bench.topic(f"src-base-{uuid.uuid4().hex[:6]}")
    bench.produce(small, [os.urandom(1000) for _ in range(100)])
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        tag = f"{budget.lower()}-{uuid.uuid4().hex[:6]}"
        log(f"base run (100 small records passed through), max_in_flight {budget}")
        dst = bench.topic(f"dst-base-{tag}", log_append_time=True)
        base = bench.relay(f"relay-base-{tag}", small, dst, f"relay/base-{tag}", budget, threshold="1MiB").peak_rss
        peaks: list[float] = []
        rates: list[float] = []
        for n in range(runs):
            log(f"RSS run {n + 1}/{runs}: {count} records of 64 MiB, max_in_flight {budget}")
            dst = bench.topic(f"dst-rss-{tag}-{n}", log_append_time=True)
            run = bench.relay(f"relay-rss-{tag}-{n}", src, dst, f"relay/rss-{tag}-{n}", budget)
            bench.forget(f"relay/rss-{tag}-{n}")
            assert run.records == count, run
            peaks.append(run.peak_rss)
            rates.append(mbs((count - 1) * 64 * MIB, run.steady))
            log(f"RSS run {n + 1}: peak {run.peak_rss / MIB:.0f} MiB (base {base / MIB:.0f}), {rates[-1]:.1f} MB/s")
        spread = " / ".join(f"{p / MIB:.0f}" for p in (min(peaks), median(peaks), max(peaks)))
        rows.append(
            {
                "run": f"{count} x 64 MiB ({count * 64} MiB)",
                "max_in_flight": budget,
                "runs": runs,
                "base MiB": base / MIB,
                "peak RSS MiB min / median / max": spread,
                "(median - base) / 64 MiB": (median(peaks) - base) / (64 * MIB),
                "(max - base) / 64 MiB": (max(peaks) - base) / (64 * MIB),
                "relay MB/s (steady, median)": median(rates),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lfs_offload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,64", help="record sizes in MiB, comma separated (default 8,64)")
    parser.add_argument("--total-mib", type=int, default=512, help="MiB relayed per record size (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="alternating relay/raw runs per size; medians (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="upload_concurrency and PUT threads (default 8)")
    parser.add_argument("--part-size", default="8MiB", help="lfs.part_size (default 8MiB)")
    parser.add_argument("--max-in-flight", default="256MiB", help="the relay's max_in_flight (default 256MiB)")
    parser.add_argument("--rss-run", action="store_true", help="also relay 2 GiB of 64 MiB records for peak RSS")
    parser.add_argument("--rss-total-mib", type=int, default=2048, help="MiB of 64 MiB records in the RSS run")
    parser.add_argument(
        "--rss-max-in-flight",
        default="64MiB,128MiB",
        help="max_in_flight of each RSS run (default 64MiB,128MiB)",
    )
    parser.add_argument("--batch-max-bytes", help="target.batch.max_bytes of the relay (default: the relay's)")
    parser.add_argument("--workdir", type=Path, help="sandbox directory (default: a fresh one under build/bench/work)")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox's data (several GiB) afterwards")
    args = parser.parse_args(argv)
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    workdir = args.workdir or ROOT / "build" / "bench" / "work" / f"lfs-{uuid.uuid4().hex[:6]}"
    bench = Bench(workdir, args.concurrency, parse_size(args.part_size, "--part-size"))
    bench.batch_max_bytes = args.batch_max_bytes
    rows: list[dict[str, Any]] = []
    rss_rows: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()[0]
    bench.up()
    try:
        for size_mib in sizes:
            rows.append(throughput(bench, size_mib, args.total_mib, args.runs, args.max_in_flight))
        if args.rss_run:
            budgets = [b.strip() for b in args.rss_max_in_flight.split(",")]
            rss_rows = rss_runs(bench, args.rss_total_mib, budgets, args.runs)
    finally:
        bench.down()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()[0]

    columns = list(rows[0]) if rows else []
    print(table(columns, rows))
    if rss_rows:
        print()
        print(table(list(rss_rows[0]), rss_rows))
    print(f"\nload average (1 min) before / after: {load_before:.1f} / {load_after:.1f} on {os.cpu_count()} CPUs")
    settings = {
        "concurrency": args.concurrency,
        "part_size": args.part_size,
        "max_in_flight": args.max_in_flight,
        "target.batch.max_bytes": args.batch_max_bytes or "64MiB (default)",
        "total_mib_per_size": args.total_mib,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load average (1 min) before / after": f"{load_before:.1f} / {load_after:.1f}",
    }
    result = {
        "name": "lfs_offload",
        "title": "LFS offload: relay MB/s next to raw boto3 PUT to the same SeaweedFS",
        "columns": columns,
        "rows": rows,
        "settings": settings,
        "notes": [
            "Kafka, SeaweedFS, the relay and the PUT threads share the same machine.",
            "steady = payload of all records but the first over first-to-last envelope append time.",
        ],
        "goals": [
            {
                "goal": f"LFS offload ({row['record size']}) at least 80% of the raw S3 PUT rate",
                "measured": f"{row['relay MB/s (steady)']:,.1f} vs {row['raw PUT MB/s']:,.1f} MB/s "
                f"({row['relay / raw']:.2f}x)",
                "met": row["relay / raw"] >= 0.8,
            }
            for row in rows
            if "relay / raw" in row
        ],
        "runs": rss_rows,
        "machine": {},
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "chart": {},
    }
    out = ROOT / "build" / "bench" / "results" / "lfs_offload.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    log(f"result written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
