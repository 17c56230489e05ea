"""``kafka-lfs-relay demo``: the whole mission on the embedded sandbox, with the real CLI and real configs.

1. Sandbox: two identical source clusters (east, west), a target cluster (dr), a plain cluster,
   and S3.
2. Both sources get the same dataset: small JSON events and large binary records (5-50 MB).
3. A failover relay with LFS offload copies the sources into an envelope topic on dr; partway
   through, the demo kills the active source, and the relay switches to the other one.
4. A hydrating relay turns the envelope topic back into plain records on the plain cluster.
5. The plain cluster is compared with the source, record by record and byte by byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from kafka_lfs_relay.sandbox import FeedProducer, KafkaCluster, Sandbox, SandboxError
from kafka_lfs_relay.sandbox.process import free_port
from relay.kafkautil import headers_of

TOPIC = "events"
ENVELOPES = "events.lfs"
PARTITIONS = 3
BIG = 64 * 1024 * 1024


def add_parser(sub: Any) -> None:
    """Register ``demo``."""
    demo = sub.add_parser("demo", help="show failover, LFS offload and hydration working on the sandbox")
    demo.add_argument("--dir", type=Path, help="where the sandbox, configs and logs go (default: a new temp folder)")
    demo.add_argument("--keep", action="store_true", help="leave the sandbox running at the end")
    demo.add_argument("--events", type=int, default=20_000, help="small JSON events (default 20000)")
    demo.add_argument("--large", type=int, default=6, help="large binary records of 5-50 MB (default 6)")
    demo.set_defaults(func=cmd_demo)


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Phase:
    """Outcome of one relay run."""

    seconds: float
    records: int
    bytes: int
    log: Path


def _dataset(events: int, large: int, seed: int = 7) -> list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]:
    rng = random.Random(seed)
    rows: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]] = []
    big_every = max(1, events // max(1, large))
    n_big = 0
    for i in range(events):
        event = {"id": i, "type": rng.choice(["view", "click", "buy"]), "user": rng.randrange(10_000)}
        rows.append(
            (
                i % PARTITIONS,
                f"user-{event['user']}".encode(),
                json.dumps(event).encode(),
                [("content-type", b"application/json")],
            )
        )
        if i % big_every == big_every // 2 and n_big < large:
            size = rng.randrange(5_000_000, 50_000_001)
            blob = rng.randbytes(size)
            rows.append(
                (i % PARTITIONS, f"blob-{n_big}".encode(), blob, [("content-type", b"application/octet-stream")])
            )
            n_big += 1
    return rows


def _feed(clusters: list[KafkaCluster], rows: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    for cluster in clusters:
        producer = FeedProducer(
            {**cluster.client_config(), "enable.idempotence": True, "linger.ms": 10, "message.max.bytes": BIG}
        )
        for partition, key, value, headers in rows:
            producer.send(TOPIC, value, key, partition=partition, headers=cast(Any, headers))
        producer.flush_all(120)


def _create(cluster: KafkaCluster, topic: str) -> None:
    admin = AdminClient(dict[str, Any](cluster.client_config()))
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"max.message.bytes": str(BIG)})])
    futures[topic].result(60)


def _cluster_entry(cluster: KafkaCluster, name: str) -> dict[str, Any]:
    return {"name": name, "bootstrap_servers": cluster.bootstrap_servers}


def _write(path: Path, config: dict[str, Any], comment: str) -> Path:
    path.write_text(f"# {comment}\n" + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _s3_section(s3: dict[str, str], bucket: bool) -> dict[str, Any]:
    return {
        "endpoint_url": s3["endpoint_url"],
        "region": s3["region"],
        **({"bucket": s3["bucket"]} if bucket else {}),
        "path_style": True,
        "access_key_id": "${DEMO_S3_ACCESS_KEY}",
        "secret_access_key": "${DEMO_S3_SECRET_KEY}",
    }


def _relayed(port: int) -> tuple[int, int]:
    """(records, bytes) the relay at ``port`` has committed, from its metrics endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0, 0
    records = bytes_ = 0.0
    for line in text.splitlines():
        if line.startswith("kafka_lfs_relay_records_relayed_total{"):
            records += float(line.rsplit(" ", 1)[1])
        elif line.startswith("kafka_lfs_relay_bytes_relayed_total{"):
            bytes_ += float(line.rsplit(" ", 1)[1])
    return int(records), int(bytes_)


def _run_relay(
    config: Path,
    log: Path,
    port: int,
    env: dict[str, str],
    expect: int,
    label: str,
    midway: Callable[[], None] | None = None,
) -> Phase:
    """Run one relay with the real CLI and show its progress from its metrics endpoint.

    With ``midway``, the relay runs until stopped: ``midway`` is called once a third of the
    records are through (it kills the active source and feeds the rest to the other one), and
    the relay gets SIGTERM (a drained, clean stop) once every record is through. Without it the
    relay runs with ``--stop-at-end``.
    """
    argv = [sys.executable, "-m", "kafka_lfs_relay", "run", "--config", str(config)]
    if midway is None:
        argv.append("--stop-at-end")
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    fired = False
    records = bytes_ = 0
    while proc.poll() is None:
        time.sleep(0.5)
        records, bytes_ = max((records, bytes_), _relayed(port))
        sys.stdout.write(f"\r  {label}: {records:>7,}/{expect:,} records ")
        sys.stdout.flush()
        if midway is not None and not fired and records >= expect // 3:
            fired = True
            midway()
        if midway is not None and records >= expect and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        if time.monotonic() - start > 900:
            proc.kill()
    sys.stdout.write("\n")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SandboxError(f"{label} relay failed (exit {proc.returncode}); see {log}:\n{tail}")
    return Phase(time.monotonic() - start, records, bytes_, log)


def _digest_all(
    cluster: KafkaCluster, topic: str
) -> dict[int, list[tuple[bytes | None, str, list[tuple[str, bytes]]]]]:
    consumer = Consumer(
        {
            **cluster.client_config(),
            "group.id": "demo-verify",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": BIG,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: dict[int, list[tuple[bytes | None, str, list[tuple[str, bytes]]]]] = {p: [] for p in range(PARTITIONS)}
    done: set[int] = set()
    deadline = time.monotonic() + 300
    while len(done) < PARTITIONS and time.monotonic() < deadline:
        for msg in consumer.consume(500, 1.0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition() or 0)
                continue
            headers = [(k, v or b"") for k, v in headers_of(msg) if not k.startswith("kfr-")]
            digest = hashlib.sha256(msg.value() or b"").hexdigest()
            out[msg.partition() or 0].append((msg.key(), digest, headers))
    consumer.close()
    return out


def _switch_line(log: Path) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"switching source"' in line:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the plain cluster matches the source record for record and byte for byte."""
    root = (args.dir or Path(tempfile.mkdtemp(prefix="kfr-demo-"))).resolve()
    configs = root / "config"
    configs.mkdir(parents=True, exist_ok=True)
    _say(f"kafka-lfs-relay demo in {root}")
    _say("1/5 starting the sandbox: clusters east, west (sources), dr (target), plain, and S3 ...")
    box = Sandbox(root / "sandbox", clusters=4, s3=True)
    try:
        box.up()
        east, west, dr, plain = box.clusters
        assert box.s3 is not None
        s3 = box.s3.info()
        env = {**os.environ, "DEMO_S3_ACCESS_KEY": s3["access_key_id"], "DEMO_S3_SECRET_KEY": s3["secret_access_key"]}
        _say(f"2/5 feeding both sources the same {args.events:,} JSON events and {args.large} large records ...")
        rows = _dataset(args.events, args.large)
        for cluster in (east, west):
            _create(cluster, TOPIC)
        _create(dr, ENVELOPES)
        _create(plain, TOPIC)
        # Both sources get the first half now; the second half arrives after east is killed, so
        # the relay is still busy when its source dies and the switch is there to see.
        half = len(rows) // 2
        _feed([east, west], rows[:half])
        total_bytes = sum(len(v) for _, _, v, _ in rows)

        def kill_east_and_feed_west() -> None:
            east.kill()
            _feed([west], rows[half:])

        offload_port, hydrate_port = free_port(), free_port()
        offload = _write(
            configs / "offload.yml",
            {
                "name": "demo-offload",
                "mode": "failover",
                "sources": [_cluster_entry(east, "east"), _cluster_entry(west, "west")],
                "source_pool": {"healthcheck_interval": "1s", "request_timeout": "1s"},
                "topics": [{"source": TOPIC, "target": ENVELOPES}],
                "metrics": {"listen": f"127.0.0.1:{offload_port}"},
                "log": {"format": "json"},
                "target": {
                    "type": "lfs",
                    **_cluster_entry(dr, "dr"),
                    "lfs": {"threshold": "1MiB", "s3": {**_s3_section(s3, bucket=True), "prefix": "demo"}},
                },
            },
            "Failover relay from east/west into dr, offloading records over 1 MiB to S3 (kfs_lfs envelopes).",
        )
        hydrate = _write(
            configs / "hydrate.yml",
            {
                "name": "demo-hydrate",
                "mode": "single",
                "sources": [_cluster_entry(dr, "dr")],
                "topics": [{"source": ENVELOPES, "target": TOPIC}],
                "metrics": {"listen": f"127.0.0.1:{hydrate_port}"},
                "log": {"format": "json"},
                "target": {
                    "type": "hydrate",
                    **_cluster_entry(plain, "plain"),
                    "kafka": {"message.max.bytes": str(BIG)},
                    "hydrate": {"allowed_buckets": [s3["bucket"]], "s3": _s3_section(s3, bucket=False)},
                },
            },
            "Hydrating relay from the envelope topic on dr into plain records on the plain cluster.",
        )

        _say(
            f"3/5 relaying east/west -> dr with LFS offload (metrics: http://127.0.0.1:{offload_port}/metrics); "
            "east is killed a third of the way through ..."
        )
        phase1 = _run_relay(
            offload, root / "offload.log", offload_port, env, len(rows), "offload", midway=kill_east_and_feed_west
        )
        switch = _switch_line(phase1.log)
        _say(f"4/5 hydrating dr -> plain (metrics: http://127.0.0.1:{hydrate_port}/metrics) ...")
        phase2 = _run_relay(hydrate, root / "hydrate.log", hydrate_port, env, len(rows), "hydrate")

        _say("5/5 verifying plain against the source, record by record and byte by byte ...")
        want = _digest_all(west, TOPIC)
        got = _digest_all(plain, TOPIC)
        mismatched = [p for p in range(PARTITIONS) if want[p] != got[p]]
        objects = box.s3.client().list_objects_v2(Bucket=s3["bucket"], Prefix="demo/").get("KeyCount", 0)

        rows_out = [
            ("records in the source", f"{len(rows):,}"),
            ("bytes in the source", f"{total_bytes / 1e6:,.1f} MB"),
            ("records relayed with offload", f"{phase1.records:,} in {phase1.seconds:.1f}s (wall time, with start-up)"),
            ("objects in S3", str(objects)),
            (
                "source switch",
                "none seen"
                if switch is None
                else f"{switch['from_source']} -> {switch['to_source']} "
                f"({switch['reason']}: {switch.get('detail', '')})",
            ),
            (
                "records hydrated",
                f"{sum(len(v) for v in got.values()):,} in {phase2.seconds:.1f}s "
                f"({total_bytes / 1e6 / max(phase2.seconds, 1e-9):.1f} MB/s, wall time with start-up)",
            ),
            (
                "verification",
                "OK: identical, record for record and byte for byte"
                if not mismatched
                else f"MISMATCH in partitions {mismatched}",
            ),
            ("configs", str(configs)),
            ("metrics endpoints", f"127.0.0.1:{offload_port} (offload), 127.0.0.1:{hydrate_port} (hydrate)"),
        ]
        width = max(len(k) for k, _ in rows_out)
        _say("")
        for key, value in rows_out:
            _say(f"  {key:<{width}}  {value}")
        if args.keep:
            _say(f"\nThe sandbox keeps running; stop it with: kafka-lfs-relay sandbox down --dir {root / 'sandbox'}")
        return 0 if not mismatched and switch is not None else 1
    except SandboxError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            box.down()
            shutil.rmtree(root / "sandbox", ignore_errors=True)
