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
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from kafka_lfs_relay.sandbox import (
    FeedProducer,
    KafkaCluster,
    RelayProcess,
    Sandbox,
    SandboxError,
    cluster_entry,
    relay_env,
)
from kafka_lfs_relay.sandbox.process import free_port
from relay import logs
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


class _ProgressLine:
    """One progress line: redrawn in place on a terminal, printed once (its final state) elsewhere.

    :meth:`note` prints a line of its own above it, so events (a killed cluster, a switch) read
    as the demo's lines between the steps, not mixed into the progress.
    """

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.text = ""

    def draw(self, text: str) -> None:
        if self.tty and text != self.text:
            sys.stdout.write("\r\x1b[K" + text)
            sys.stdout.flush()
        self.text = text

    def note(self, text: str) -> None:
        if self.tty and self.text:
            sys.stdout.write("\r\x1b[K")
        sys.stdout.write(text + "\n")
        if self.tty and self.text:
            sys.stdout.write(self.text)
        sys.stdout.flush()

    def finish(self, text: str) -> None:
        if self.tty:
            self.draw(text)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
        self.text = ""


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
    """Write ``rows`` to every cluster; each producer is destroyed before this returns.

    A feeder must not outlive its work: the demo kills east afterwards, and a live client of a
    dead cluster keeps reconnecting (FeedProducer holds no reference cycle, so dropping it is
    enough; ``del`` makes that explicit).
    """
    for cluster in clusters:
        producer = FeedProducer(
            {**cluster.client_conf(), "enable.idempotence": True, "linger.ms": 10, "message.max.bytes": BIG}
        )
        for partition, key, value, headers in rows:
            producer.send(TOPIC, value, key, partition=partition, headers=cast(Any, headers))
        producer.flush_all(120)
        del producer


def _create(cluster: KafkaCluster, topic: str) -> None:
    admin = AdminClient(cluster.client_conf())
    futures = admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"max.message.bytes": str(BIG)})])
    futures[topic].result(60)


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


def _log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of a relay whose ``event`` is ``event``."""
    found: list[dict[str, Any]] = []
    if not log.exists():
        return found
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            parsed: dict[str, Any] = json.loads(line)
            if parsed.get("event") == event:
                found.append(parsed)
    return found


def _run_relay(
    config: Path,
    log: Path,
    port: int,
    env: dict[str, str],
    expect: int,
    label: str,
    watch: Callable[[_ProgressLine, int], None] | None = None,
) -> Phase:
    """Run one relay with the real CLI and show its progress from its metrics endpoint.

    With ``watch``, the relay runs until stopped: ``watch`` is called every half second with
    the progress line and the records through so far (the failover scenario kills a source and
    reports the switch from there), and the relay gets SIGTERM (a drained, clean stop) once
    every record is through. Without it the relay runs with ``--stop-at-end``. The final count
    is the relay's own, from the last line it logs ("relay stopped cleanly"): its metrics
    endpoint is gone once it has exited.
    """
    log.unlink(missing_ok=True)  # a demo run again in the same --dir reads this run's lines only
    relay = RelayProcess(config, *([] if watch is not None else ["--stop-at-end"]), log_path=log, env=env)
    start = time.monotonic()
    relay.start()
    line = _ProgressLine()
    records = bytes_ = 0
    try:
        while relay.alive():
            time.sleep(0.5)
            records, bytes_ = max((records, bytes_), _relayed(port))
            line.draw(f"  {label}: {records:>7,}/{expect:,} records")
            if watch is not None:
                watch(line, records)
            if watch is not None and records >= expect and relay.alive() and relay.terminate(120) is None:
                relay.kill9()
            if time.monotonic() - start > 900:
                relay.kill9()
    except BaseException:
        # The relay runs in its own session: a Ctrl-C reaches only the demo, which must stop it.
        relay.kill9()
        line.finish(line.text)
        raise
    seconds = time.monotonic() - start
    code = relay.wait(0)
    stopped = _log_events(log, "relay stopped cleanly")
    if code != 0 or not stopped:
        line.finish(f"  {label}: {records:>7,}/{expect:,} records, then the relay failed")
        raise SandboxError(f"{label} relay failed (exit {code}); see {log}:\n{relay.log_tail(15)}")
    records, bytes_ = int(stopped[-1]["records"]), int(stopped[-1]["bytes"])
    line.finish(f"  {label}: {records:>7,}/{expect:,} records in {seconds:.1f} s")
    return Phase(seconds, records, bytes_, log)


def _digest_all(
    cluster: KafkaCluster, topic: str
) -> dict[int, list[tuple[bytes | None, str, list[tuple[str, bytes]]]]]:
    consumer = Consumer(
        {
            **cluster.client_conf(),
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


class _Failover:
    """The failover scenario: kill east a third of the way through, feed the rest to west alone, report the switch.

    Called every half second by :func:`_run_relay`. West is fed from a thread, so the progress
    line keeps moving and the switch is reported when it happens.
    """

    def __init__(self, east: KafkaCluster, west: KafkaCluster, rest: list[Any], log: Path, expect: int) -> None:
        self.east, self.west, self.rest, self.log, self.expect = east, west, rest, log, expect
        self.killed_at: float | None = None
        self.switched = False
        self.error: BaseException | None = None
        self.feeder = threading.Thread(target=self._feed_west, name="demo-feed-west", daemon=True)

    def _feed_west(self) -> None:
        try:
            _feed([self.west], self.rest)
        except BaseException as exc:  # raised again on the demo's thread
            self.error = exc

    def __call__(self, line: _ProgressLine, records: int) -> None:
        if self.error is not None:
            raise SandboxError(f"feeding west failed: {self.error}")
        if self.killed_at is None and records >= self.expect // 3:
            self.east.kill()
            self.killed_at = time.time()
            line.note(f"  east killed (kill -9) at {records:,} records; the rest of the data goes to west alone")
            self.feeder.start()
        if self.killed_at is not None and not self.switched:
            switch = _switch_line(self.log)
            if switch is not None:
                self.switched = True
                at = datetime.fromisoformat(str(switch["timestamp"]).replace("Z", "+00:00")).timestamp()
                line.note(
                    f"  the relay switched from {switch['from_source']} to {switch['to_source']} "
                    f"{max(0.0, at - self.killed_at):.1f} s later (reason: {switch['reason']})"
                )

    def join(self) -> None:
        """Wait for the feeder; raise what it raised."""
        if self.feeder.is_alive():
            self.feeder.join()
        if self.error is not None:
            raise SandboxError(f"feeding west failed: {self.error}")


def _switch_line(log: Path) -> dict[str, Any] | None:
    switches = _log_events(log, "switching source")
    return switches[0] if switches else None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the plain cluster matches the source record for record and byte for byte."""
    # The demo's own lines are its output, and it checks every outcome itself: a refused record
    # fails the feeding, a failed relay ends the demo with its log's tail. Its clients' warnings
    # (a producer retrying while a fresh broker loads its coordinator) would only be noise there.
    logs.configure("error")
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
        env = {**relay_env(), "DEMO_S3_ACCESS_KEY": s3["access_key_id"], "DEMO_S3_SECRET_KEY": s3["secret_access_key"]}
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

        offload_port, hydrate_port = free_port(), free_port()
        offload = _write(
            configs / "offload.yml",
            {
                "name": "demo-offload",
                "mode": "failover",
                "sources": [cluster_entry(east, "east"), cluster_entry(west, "west")],
                "source_pool": {"healthcheck_interval": "1s", "request_timeout": "1s"},
                "topics": [{"source": TOPIC, "target": ENVELOPES}],
                "metrics": {"listen": f"127.0.0.1:{offload_port}"},
                "log": {"format": "json"},
                "target": {
                    "type": "lfs",
                    **cluster_entry(dr, "dr"),
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
                "sources": [cluster_entry(dr, "dr")],
                "topics": [{"source": ENVELOPES, "target": TOPIC}],
                "metrics": {"listen": f"127.0.0.1:{hydrate_port}"},
                "log": {"format": "json"},
                "target": {
                    "type": "hydrate",
                    **cluster_entry(plain, "plain"),
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
        failover = _Failover(east, west, rows[half:], root / "offload.log", len(rows))
        phase1 = _run_relay(offload, root / "offload.log", offload_port, env, len(rows), "offload", watch=failover)
        failover.join()
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
            ("configs", f"{configs} (offload.yml, hydrate.yml)"),
            ("relay logs", f"{phase1.log}, {phase2.log.name}"),
        ]
        width = max(len(k) for k, _ in rows_out)
        _say("")
        for key, value in rows_out:
            _say(f"  {key:<{width}}  {value}")
        _say(
            "\nYour own relay: copy a config from the folder above, set its bootstrap_servers to your clusters,\n"
            "then `kafka-lfs-relay check --config FILE` and `kafka-lfs-relay run --config FILE`\n"
            '(README: "From the demo to your clusters").'
        )
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
