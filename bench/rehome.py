"""Benchmark of re-homing (``target.lfs.rehome``): the relay copying envelopes' objects, next to a raw S3 copy.

Usage (from the repository root)::

    .venv/bin/python -m bench.rehome                              # 256 MiB of 8 MiB objects, both paths, 3 runs
    .venv/bin/python -m bench.rehome --size-mib 32 --total-mib 256 --runs 1

What is measured
  A sandbox (one KRaft cluster, two SeaweedFS servers: *east* holds the source objects, *dr* the
  target bucket) is started under ``build/bench/work``. ``--total-mib`` of incompressible objects of
  ``--size-mib`` are stored, once in a bucket on *dr* (the server-side path: the target's endpoint
  reads it) and once on *east* (the streamed path), and a KafScale envelope per object is produced to
  a source topic per path (not timed). Then, each ``--runs`` times, alternately:

  * relay: ``kafka-lfs-relay run --stop-at-end`` with ``target.type: lfs`` and ``rehome`` into a
    fresh prefix of the *dr* bucket (``rehome.concurrency`` = ``--concurrency``). Every copy is
    verified: a server-side copy is read back at the target, a streamed one is hashed as it passes.
    MB/s is payload over the time from the first to the last envelope appended to the target topic
    (LogAppendTime), records after the first; wall MB/s counts from process start.
  * raw copy: the same objects copied with boto3 from ``--concurrency`` threads, nothing verified:
    ``CopyObject`` for the server-side path, a whole-object GET then PUT for the streamed one.

Results go to ``build/bench/results/rehome.json`` (rendered by ``bench.report``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Producer

from bench.clusters import LOG_APPEND, append_span, create_topic, end_offsets
from bench.machine import machine_info
from bench.paths import WORK
from bench.procs import Child
from bench.relay_launch import relay_argv, relay_env, write_yaml
from bench.results import MIB, Result, common_args, log, markdown_table, now_text, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, S3Server, kafka_distribution
from lfs import Envelope, checksum
from relay import logs

PARTITIONS = 4
COLUMNS = ["path", "object MiB", "objects", "relay MB/s", "relay wall MB/s", "raw copy MB/s", "relay / raw",
           "relay peak RSS MiB", "relay CPU s"]  # fmt: skip


def connection(server: S3Server) -> dict[str, Any]:
    return {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "path_style": True,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }


class Bench:
    """The sandbox, the objects and their envelopes, and the two contenders."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = WORK / f"rehome-{uuid.uuid4().hex[:6]}"
        self.cluster: KafkaCluster | None = None
        self.dr: S3Server | None = None
        self.east: S3Server | None = None

    def up(self) -> None:
        log(f"starting Kafka and two SeaweedFS servers under {self.root}")
        self.cluster = KafkaCluster.create("rehome-bench", self.root / "kafka", kafka_distribution(), heap="2g")
        self.cluster.start()
        self.dr, self.east = S3Server(self.root / "s3-dr"), S3Server(self.root / "s3-east")
        self.dr.start()
        self.east.start()

    def down(self) -> None:
        for server in (self.east, self.dr):
            if server is not None:
                server.stop()
        if self.cluster is not None:
            self.cluster.stop()

    @property
    def kafka(self) -> KafkaCluster:
        assert self.cluster is not None
        return self.cluster

    def store(self, server: S3Server, size: int, count: int) -> tuple[str, list[Envelope]]:
        """A fresh bucket on ``server`` with ``count`` random objects, and their envelopes."""
        bucket = f"src-{uuid.uuid4().hex[:10]}"
        client = server.client()
        client.create_bucket(Bucket=bucket)

        def put(i: int) -> Envelope:
            data = os.urandom(size)
            key = f"default/orders/lfs/2026/12/01/obj-{i:06d}"
            client.put_object(Bucket=bucket, Key=key, Body=data)
            return Envelope(bucket=bucket, key=key, size=size, sha256=checksum(data), proxy_id="lfs-proxy-east")

        with ThreadPoolExecutor(4) as pool:
            return bucket, list(pool.map(put, range(count)))

    def source_topic(self, envelopes: list[Envelope]) -> str:
        topic = f"envelopes-{uuid.uuid4().hex[:8]}"
        create_topic(self.kafka, topic, PARTITIONS)
        producer = Producer({**self.kafka.client_conf(), "linger.ms": 5, "enable.idempotence": True})
        for i, env in enumerate(envelopes):
            producer.produce(topic, env.encode(), f"k{i}".encode(), partition=i % PARTITIONS)
        if producer.flush(60) != 0:
            raise RuntimeError("the sandbox did not take the envelopes")
        return topic

    def relay(self, source: str, source_server: S3Server, bucket: str, count: int, size: int) -> dict[str, Any]:
        """One relay run re-homing every envelope of ``source`` into a fresh prefix of the dr bucket."""
        assert self.dr is not None
        target = f"dr-{uuid.uuid4().hex[:8]}"
        create_topic(self.kafka, target, PARTITIONS, LOG_APPEND)
        name = f"rehome-{uuid.uuid4().hex[:6]}"
        rehome: dict[str, Any] = {"allowed_buckets": [bucket], "concurrency": self.args.concurrency}
        if source_server is not self.dr:
            rehome["s3"] = connection(source_server)
        config = {
            "name": name,
            "sources": [{"name": "source", "bootstrap_servers": self.kafka.client_config()["bootstrap.servers"]}],
            "topics": [{"source": source, "target": target}],
            "target": {
                "type": "lfs",
                "name": "target",
                "bootstrap_servers": self.kafka.client_config()["bootstrap.servers"],
                "lfs": {
                    "part_size": self.args.part_size,
                    "s3": {**connection(self.dr), "bucket": self.dr.bucket, "prefix": name},
                    "rehome": rehome,
                },
            },
            "log": {"level": "warning", "format": "json"},
        }
        path = write_yaml(self.root / f"{name}.yml", config)
        child = Child(name, relay_argv(path, "--stop-at-end"), self.root / f"{name}.log", relay_env()).start()
        stats = child.wait(1800)
        if stats.returncode != 0:
            raise RuntimeError(f"relay {name} exited with {stats.returncode}: {child.log_tail()}")
        written = sum(end_offsets(self.kafka, target, PARTITIONS))
        if written < count:
            raise RuntimeError(f"relay {name} wrote {written} of {count} records")
        first, last = append_span(self.kafka, target, PARTITIONS)
        steady = size * (count - 1) / (last - first) / MIB if count > 1 and last > first else 0.0
        return {"steady": steady, "wall": size * count / MIB / stats.wall, "rss": stats.peak_rss / MIB,
                "cpu": stats.cpu}  # fmt: skip

    def raw(self, source_server: S3Server, envelopes: list[Envelope]) -> float:
        """MB/s of copying the same objects with plain boto3: CopyObject, or GET then PUT across servers."""
        assert self.dr is not None
        target, dr = self.dr.bucket, self.dr.client()
        src = source_server.client()
        prefix = f"raw-{uuid.uuid4().hex[:8]}"

        def copy(env: Envelope) -> int:
            key = f"{prefix}/{env.key}"
            if source_server is self.dr:
                dr.copy_object(Bucket=target, Key=key, CopySource={"Bucket": env.bucket, "Key": env.key})
            else:
                body = src.get_object(Bucket=env.bucket, Key=env.key)["Body"].read()
                dr.put_object(Bucket=target, Key=key, Body=body)
            return env.size

        started = time.monotonic()
        with ThreadPoolExecutor(self.args.concurrency) as pool:
            total = sum(pool.map(copy, envelopes))
        return total / MIB / (time.monotonic() - started)


def run(args: argparse.Namespace) -> Result:
    bench = Bench(args)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    started, machine = now_text(), machine_info()
    bench.up()
    try:
        assert bench.dr is not None and bench.east is not None
        size, count = args.size_mib * MIB, max(2, args.total_mib // args.size_mib)
        paths = {"server-side (same endpoint)": bench.dr, "streamed (another server)": bench.east}
        prepared = {}
        for path, server in paths.items():
            log(f"{path}: storing {count} objects of {args.size_mib} MiB")
            bucket, envelopes = bench.store(server, size, count)
            prepared[path] = (server, bucket, envelopes, bench.source_topic(envelopes))
        results: dict[str, list[tuple[dict[str, Any], float]]] = {path: [] for path in paths}
        for i in range(args.runs):
            for path, (server, bucket, envelopes, topic) in prepared.items():
                log(f"{path}, run {i + 1}/{args.runs}: relay, then raw copy")
                relayed = bench.relay(topic, server, bucket, count, size)
                raw = bench.raw(server, envelopes)
                results[path].append((relayed, raw))
                runs.append({"path": path, **relayed, "raw": raw})
        for path, pairs in results.items():
            steady = statistics.median(r["steady"] for r, _ in pairs)
            raw = statistics.median(x for _, x in pairs)
            rows.append({
                "path": path, "object MiB": args.size_mib, "objects": count, "relay MB/s": steady,
                "relay wall MB/s": statistics.median(r["wall"] for r, _ in pairs), "raw copy MB/s": raw,
                "relay / raw": statistics.median(r["steady"] / x for r, x in pairs if x),
                "relay peak RSS MiB": max(r["rss"] for r, _ in pairs),
                "relay CPU s": statistics.median(r["cpu"] for r, _ in pairs),
            })  # fmt: skip
    finally:
        bench.down()
    return Result(
        name="rehome",
        title="Re-homing envelopes: the relay's verified copies next to a raw S3 copy of the same objects",
        columns=COLUMNS,
        rows=rows,
        settings={
            "object_mib": args.size_mib,
            "total_mib": args.total_mib,
            "concurrency": args.concurrency,
            "part_size": args.part_size,
            "partitions": PARTITIONS,
            "runs": args.runs,
        },
        notes=[
            "relay MB/s: payload of every envelope after the first over the time between the first and the last "
            "envelope appended to the target topic; wall: from process start to exit.",
            "server-side: CopyObject at the target's endpoint, pinned to the source's ETag, then the copy read back "
            "and verified (so S3 serves each byte twice); raw copy: CopyObject alone, nothing verified.",
            "streamed: ranged GETs from the other server feeding a multipart upload completed once verified; raw "
            "copy: a whole-object GET then a PUT, nothing verified.",
            "Both contenders copy --concurrency objects at a time; S3 servers, broker and contenders share the cores.",
        ],
        runs=runs,
        machine=machine,
        started=started,
        finished=now_text(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=8, help="object size in MiB")
    parser.add_argument("--total-mib", type=int, default=256, help="payload MiB per path")
    parser.add_argument("--concurrency", type=int, default=4, help="rehome.concurrency, and raw copy threads")
    parser.add_argument("--part-size", default="8MiB", help="target.lfs.part_size (ranged GETs and parts)")
    common_args(parser, 3)
    args = parser.parse_args(argv)
    logs.configure("warning")
    result = run(args)
    print(markdown_table(result.columns, result.rows))
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
