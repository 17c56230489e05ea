"""Scenario i: a wide estate, the same records in 1 topic x 6 partitions and in 60 topics x 20 partitions.

Two fresh sandbox clusters, ``src`` and ``dst``. The source holds ``--records`` 1 KiB records twice:
once in ``narrow`` (6 partitions), once spread over ``--topics`` topics ``wide-NN`` of
``--partitions`` partitions each. Contenders, alternated run by run, each a ``run --stop-at-end``
(a relay of a new name) into target topics that exist and were written before, as a running mirror's
are: their records deleted to the end between runs (``LogAppendTime``, so the broker stamps when each
record landed). The first copy of each layout, into topics just created, is measured apart
(``narrow-first``, ``wide-first``): a broker's first writes to 1,200 new partitions cost it far more
than later ones (on this machine a plain transactional producer wrote 2.5-4x slower into new
partitions than into the same partitions a second time), and a mirror pays that once.

* ``narrow``: the relay with ``topics: [{source: narrow}]``;
* ``wide``: the relay with ``topics: [{source_pattern: "wide-[0-9]+"}]``, 1,200 partitions.

Per run: throughput (records over the span from the first to the last record appended to the
target), start-up (process start to the first record appended to the target), CPU seconds and
peak RSS of the relay process, and what it wrote to its positions topic: records, transactions
(read back with ``read_committed``, a transaction's records are contiguous offsets and its commit
marker takes the next one), positions records per transaction, and whether every positions record
is one a transaction needed (one per source partition that carried records in it: the commit
markers in the target partitions count those pairs exactly; besides those, each partition's first
entry is written once, before any record: no position yet, and no ``kfr-pos`` header of an earlier
release found in the target, so that no later start scans for them again; and a *late* entry,
at most one per such pair: the same position again with the map point its transaction's records
made, written by a later transaction that did not carry that partition).

Baselines, in each round after the relays, copying the same layouts into the same target topics,
emptied the same way, measured over the same append span; each makes one transaction per poll of
at most 20,000 records and writes no positions:

* ``go-txn`` (``bench/gorelay``, franz-go): what the brokers allow a compiled transactional loop;
* ``py-txn`` (``bench/plain_loop.py --txn``, confluent-kafka, one thread: poll, produce, commit):
  what the client library our relay is built on allows under the same commit shape.

Then ``restart``: the last ``wide`` relay started again with nothing to relay, after its positions
topic was given the entries of ``--entries`` partitions in all (the 1,200 it owns, the rest from
topics no longer on the source, each with an offset map of 37 points, what 60,000 transactions
leave, and written twice: a topic not compacted yet): its wall time is start-up. And
``read``: the positions topic read back in this process wanting all ``--entries`` partitions
(every entry decoded).

``python -m bench.wide_estate [--records 120000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from bench import go_loop, plain_loop
from bench.clusters import (
    LOG_APPEND,
    admin,
    append_span,
    create_topic,
    end_offsets,
    fill_topic,
    fresh_clusters,
)
from bench.machine import machine_info
from bench.paths import WORK
from bench.procs import Child, exit_on_sigterm
from bench.relay_launch import relay_argv, relay_env, write_yaml
from bench.results import MIB, Result, common_args, log, median, now_text, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, cluster_entry
from relay.message import SourcePartition
from targets.kafka import positions
from targets.kafka.positions import Entry, PositionsTopic

CONTENDERS = ("narrow", "wide")
FIRST = "-first"
"""Suffix of a contender's first copy, into target topics just created."""
NARROW_PARTITIONS = 6
LOOPS = ("go-txn", "py-txn")
"""The baseline loops, each run on both layouts in every round."""
MAP_POINTS = 37


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=120_000, help="1 KiB records, in each layout")
    parser.add_argument("--topics", type=int, default=60, help="topics of the wide layout")
    parser.add_argument("--partitions", type=int, default=20, help="partitions of each wide topic")
    parser.add_argument("--entries", type=int, default=10_000, help="partitions' entries in the restart's positions")
    common_args(parser, runs=3)
    args = parser.parse_args()
    started = now_text()
    bench = Estate(args)
    go_loop.binary()  # built (or found missing) before any cluster starts
    with fresh_clusters(["src", "dst"], "wide") as clusters:
        bench.src, bench.dst = clusters["src"], clusters["dst"]
        bench.fill()
        for contender in CONTENDERS:
            log(f"first copy: {contender}, into new target topics")
            _say(contender + FIRST, bench.run(contender, -1, fresh=True))
        for round_no in range(args.runs):
            for contender in CONTENDERS:
                log(f"round {round_no + 1}/{args.runs}: {contender}")
                _say(contender, bench.run(contender, round_no))
            for loop in LOOPS:
                for layout in CONTENDERS:
                    row = bench.run_loop(loop, layout, round_no)
                    log(f"  {loop} {layout}: {row['records/s']:,.0f} records/s, CPU {row['CPU s']:.1f} s")
        restarts = bench.restarts()
    write_result(bench.result(started, restarts))


def _say(contender: str, row: dict[str, Any]) -> None:
    log(
        f"  {contender}: {row['records/s']:,.0f} records/s, start-up {row['start-up s']:.2f} s, "
        f"CPU {row['CPU s']:.1f} s, peak RSS {row['peak RSS MiB']:.0f} MiB, "
        f"{row['positions records per transaction']:.1f} positions records per transaction"
    )


class Estate:
    """The data set and how each contender runs once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.src: KafkaCluster
        self.dst: KafkaCluster
        self.wide = [f"wide-{i:02d}" for i in range(args.topics)]
        self.work = WORK / f"wide-{uuid.uuid4().hex[:6]}"
        self.runs: list[dict[str, Any]] = []
        self.loop_runs: list[dict[str, Any]] = []
        self.last_wide = ""

    def layout(self, contender: str) -> dict[str, int]:
        """Source topic -> partitions of a contender."""
        if contender == "narrow":
            return {"narrow": NARROW_PARTITIONS}
        return dict.fromkeys(self.wide, self.args.partitions)

    def fill(self) -> None:
        """Write the records in both layouts."""
        log(f"filling narrow and {len(self.wide)} wide topics with {self.args.records:,} records each way")
        create_topic(self.src, "narrow", NARROW_PARTITIONS)
        fill_topic([self.src], "narrow", self.args.records, NARROW_PARTITIONS)
        _create_topics(self.src, self.wide, self.args.partitions, {})
        per_topic = self.args.records // len(self.wide)
        for topic in self.wide:
            fill_topic([self.src], topic, per_topic, self.args.partitions)

    def config(self, contender: str, name: str) -> Path:
        topics: list[dict[str, Any]] = [{"source": "narrow"}]
        if contender != "narrow":
            topics = [{"source_pattern": "wide-[0-9]+"}]
        body = {
            "name": name,
            "sources": [cluster_entry(self.src, "src")],
            "topics": topics,
            "target": cluster_entry(self.dst, "dst"),
            "log": {"format": "json"},
        }
        return write_yaml(self.work / f"{name}.yml", body)

    def run(self, contender: str, round_no: int, fresh: bool = False) -> dict[str, Any]:
        """One ``run --stop-at-end`` measured: into target topics just created (``fresh``), else into the
        existing ones, emptied (their records deleted to the end: the relay finds nothing of another there)."""
        layout = self.layout(contender)
        before = 0
        if fresh:
            _create_topics(self.dst, list(layout), next(iter(layout.values())), LOG_APPEND)
            time.sleep(1.0)
        else:
            before = _empty(self.dst, layout)
        name = f"{contender}-{round_no + 1}-{uuid.uuid4().hex[:6]}"
        path = self.config(contender, name)
        child = Child(name, [*relay_argv(path), "--stop-at-end"], self.work / f"{name}.log", relay_env())
        began = time.time()
        stats = child.start().wait(900)
        if stats.returncode != 0:
            raise RuntimeError(f"{name} exited {stats.returncode}; see {child.log_path}:\n{child.log_tail()}")
        spans = [append_span(self.dst, topic, n) for topic, n in layout.items()]
        first, last = min(s[0] for s in spans), max(s[1] for s in spans)
        ends = sum(sum(end_offsets(self.dst, topic, n)) for topic, n in layout.items()) - before
        if ends < self.args.records:
            raise RuntimeError(f"{name}: the target took {ends} offsets, expected at least {self.args.records}")
        written = _positions_written(self.dst, positions.default_topic(name))
        # One commit marker per target partition per transaction that wrote to it: with partition: preserve,
        # exactly the (transaction, source partition) pairs a positions record is needed for.
        needed = ends - self.args.records
        row = {
            "contender": contender + (FIRST if fresh else ""),
            "partitions": sum(layout.values()),
            "records/s": self.args.records / max(last - first, 1e-3),
            "start-up s": first - began,
            "CPU s": stats.cpu,
            "peak RSS MiB": stats.peak_rss / MIB,
            "transactions": written["transactions"],
            "positions records": written["records"],
            "positions records per transaction": written["records"] / max(1, written["transactions"]),
            "most in one transaction": written["most"],
            "partition-transactions with records": needed,
            "first positions": written["first"],
            "late map points": written["late"],
        }
        self.runs.append(row)
        if contender == "wide" and not fresh:
            self.last_wide = name
        return row

    def run_loop(self, loop: str, layout_name: str, round_no: int) -> dict[str, Any]:
        """A baseline loop (one of :data:`LOOPS`) copying ``layout_name``'s topics once, into the same target
        topics emptied."""
        layout = self.layout(layout_name)
        _empty(self.dst, layout)
        topics = ",".join(layout)
        src, dst = self.src.bootstrap_servers, self.dst.bootstrap_servers
        if loop == "go-txn":
            argv = go_loop.argv(src, dst, topics, topics, transactions=True)
        else:
            argv = [sys.executable, "-m", plain_loop.__name__, "--source", src, "--target", dst]
            argv += ["--topic", topics, "--out", topics, "--txn"]
        name = f"{loop}-{layout_name}-{round_no + 1}"
        child = Child(name, argv, self.work / f"{name}.log", relay_env())
        stats = child.start().wait(900)
        if stats.returncode != 0:
            raise RuntimeError(f"{loop} exited {stats.returncode}:\n{child.log_tail()}")
        copied, txns = go_loop.copied(child.log_path.read_text(errors="replace"))
        if copied != self.args.records:
            raise RuntimeError(f"{loop} copied {copied} records, expected {self.args.records}")
        spans = [append_span(self.dst, topic, n) for topic, n in layout.items()]
        first, last = min(s[0] for s in spans), max(s[1] for s in spans)
        row = {
            "loop": loop,
            "layout": layout_name,
            "partitions": sum(layout.values()),
            "records/s": self.args.records / max(last - first, 1e-3),
            "CPU s": stats.cpu,
            "transactions": txns,
        }
        self.loop_runs.append(row)
        return row

    def restarts(self) -> list[dict[str, Any]]:
        """The last wide relay started again over ``--entries`` partitions' entries, and the read alone."""
        name = self.last_wide
        topic = positions.default_topic(name)
        owned = [SourcePartition(t, p) for t in self.wide for p in range(self.args.partitions)]
        ghosts = [SourcePartition(f"gone-{i // 20:04d}", i % 20) for i in range(max(0, self.args.entries - len(owned)))]
        log(f"writing {len(ghosts):,} more entries with {MAP_POINTS}-point maps, twice, to {topic}")
        for _ in range(2):
            _write_entries(self.dst, name, topic, ghosts)
        size = sum(end_offsets(self.dst, topic, 1))
        rows = []
        path = self.config("wide", name)
        for round_no in range(self.args.runs):
            child = Child(f"restart-{round_no}", [*relay_argv(path), "--stop-at-end"],
                          self.work / f"restart-{round_no}.log", relay_env())  # fmt: skip
            stats = child.start().wait(600)
            if stats.returncode != 0:
                raise RuntimeError(f"restart exited {stats.returncode}:\n{child.log_tail()}")
            reader = PositionsTopic(_cluster_config(self.dst), topic, name, timeout=60)
            began = time.monotonic()
            found = reader.read(set(owned) | set(ghosts))
            read_s = time.monotonic() - began
            if len(found) != len(owned) + len(ghosts):
                raise RuntimeError(f"read {len(found)} entries back, expected {len(owned) + len(ghosts)}")
            row = {"start-up s": stats.wall, "CPU s": stats.cpu, "read s": read_s, "positions offsets": size}
            log(f"  restart: {stats.wall:.2f} s (CPU {stats.cpu:.1f} s); reading all entries alone: {read_s:.2f} s")
            rows.append(row)
        return rows

    def result(self, started: str, restarts: list[dict[str, Any]]) -> Result:
        rows = []
        for contender in [*CONTENDERS, *(c + FIRST for c in CONTENDERS)]:
            mine = [r for r in self.runs if r["contender"] == contender]
            row: dict[str, Any] = {"contender": contender, "partitions": mine[0]["partitions"]}
            for key in mine[0]:
                if key not in row:
                    row[key] = median([r[key] for r in mine])
            rows.append(row)
        narrow, wide, narrow_first, wide_first = rows
        ratio = wide["records/s"] / narrow["records/s"]
        loop_rows = []
        for loop in LOOPS:
            for layout in CONTENDERS:
                mine = [r for r in self.loop_runs if r["loop"] == loop and r["layout"] == layout]
                medians = {k: median([r[k] for r in mine]) for k in mine[0] if k not in ("loop", "layout")}
                loop_rows.append({"loop": loop, "layout": layout, **medians})
        loop_ratio = {
            loop: by_layout["wide"] / by_layout["narrow"]
            for loop in LOOPS
            for by_layout in [{r["layout"]: r["records/s"] for r in loop_rows if r["loop"] == loop}]
        }
        first_ratio = wide_first["records/s"] / narrow_first["records/s"]
        restart_s = median([r["start-up s"] for r in restarts])
        read_s = median([r["read s"] for r in restarts])
        exact = all(
            r["positions records"] - r["first positions"] - r["late map points"]
            == r["partition-transactions with records"]
            and r["late map points"] <= r["partition-transactions with records"]
            for r in self.runs
        )
        goals = [
            {
                "goal": "wide estate (60 x 20 partitions) at >= 0.7x the narrow one's throughput (1 x 6)",
                "measured": f"{ratio:.2f}x ({wide['records/s']:,.0f} vs {narrow['records/s']:,.0f} records/s); "
                f"on the same brokers the Go transactional loop {loop_ratio['go-txn']:.2f}x, the Python one (the "
                f"relay's client library, no pipelining) {loop_ratio['py-txn']:.2f}x",
                "met": ratio >= 0.7,
            },
            {
                "goal": f"start-up on a positions topic holding {self.args.entries:,} partitions' entries "
                "(with the offset map) under 10 s",
                "measured": f"{restart_s:.1f} s (reading every entry back alone: {read_s:.1f} s)",
                "met": restart_s < 10,
            },
            {
                "goal": "positions records per transaction bounded: untouched partitions are not rewritten",
                "measured": f"{wide['positions records per transaction']:.0f} per transaction of the wide estate "
                f"(at most {wide['most in one transaction']:.0f}, of {wide['partitions']:,} partitions); every "
                "positions record is one a transaction needed, a partition's first entry (once each), or a "
                "transaction's late map point (at most once each)"
                if exact
                else "some transaction wrote positions of partitions it did not carry",
                "met": exact,
            },
        ]
        notes = [
            f"First copies, into target topics just created: wide {wide_first['records/s']:,.0f} vs narrow "
            f"{narrow_first['records/s']:,.0f} records/s ({first_ratio:.2f}x), one run each; the rows without "
            "'-first' write into the same topics again, as a running mirror does.",
            f"wide vs narrow: {ratio:.2f}x the throughput, {wide['start-up s'] - narrow['start-up s']:+.1f} s of "
            f"start-up, {wide['CPU s'] / narrow['CPU s']:.2f}x the CPU, "
            f"{wide['peak RSS MiB'] - narrow['peak RSS MiB']:+.0f} MiB peak RSS.",
            "partition-transactions with records: the commit markers in the target partitions (each transaction "
            "leaves one in every partition it wrote); with partition: preserve each is one source partition moved "
            "by one transaction, which is exactly what needs a positions record.",
            "Start-up is from process start to the first record appended to the target: metadata, target topics "
            "checked, producers fenced, positions read back, the first batch committed.",
        ]
        restart_rows = [
            {
                "entries": self.args.entries,
                "positions offsets read": restarts[0]["positions offsets"],
                "start-up s": restart_s,
                "CPU s": median([r["CPU s"] for r in restarts]),
                "reading every entry alone s": read_s,
                "runs": len(restarts),
            }
        ]
        section = {
            "title": f"Restart on {self.args.entries:,} partitions' entries",
            "columns": list(restart_rows[0]),
            "rows": restart_rows,
            "notes": [
                f"The wide relay ({self.args.topics * self.args.partitions:,} partitions of its own, their entries "
                f"as its runs wrote them) restarted with nothing to relay; its positions topic also holds entries of "
                f"{self.args.entries - self.args.topics * self.args.partitions:,} partitions of topics no longer on "
                f"the source, each with a {MAP_POINTS}-point offset map and written twice (compaction has not run). "
                "start-up s is the whole run's wall time.",
                "reading every entry alone: the positions topic read in one process wanting all the entries, so "
                "each one is decoded.",
            ],
        }
        return Result(
            name="i_wide_estate",
            title=f"g. A wide estate: {self.args.records:,} x 1 KiB records in 1 x 6 vs "
            f"{self.args.topics} x {self.args.partitions} partitions",
            columns=list(rows[0]),
            rows=rows,
            settings={
                "records": self.args.records,
                "narrow": f"1 topic x {NARROW_PARTITIONS} partitions",
                "wide": f"{self.args.topics} topics x {self.args.partitions} partitions, by pattern",
                "relay": "run --stop-at-end, defaults (batch.max_records 20000, linger 50ms)",
                "go-txn": go_loop.SETTINGS["go-txn"],
                "py-txn": plain_loop.TXN_SETTINGS,
            },
            notes=notes,
            goals=goals,
            sections=[section, _loop_section(loop_rows, loop_ratio, wide, narrow)],
            runs=self.runs
            + [{"contender": "restart", **r} for r in restarts]
            + [{"contender": f"{r['loop']} {r['layout']}", **r} for r in self.loop_runs],
            machine=machine_info(),
            started=started,
            finished=now_text(),
        )


def _loop_section(
    loop_rows: list[dict[str, Any]], loop_ratio: dict[str, float], wide: dict[str, Any], narrow: dict[str, Any]
) -> dict[str, Any]:
    """The baselines' table: each loop on both layouts, and the relay against each."""
    notes = []
    for loop in LOOPS:
        rate = {r["layout"]: r["records/s"] for r in loop_rows if r["loop"] == loop}
        notes.append(
            f"{loop} wide vs narrow: {loop_ratio[loop]:.2f}x. The relay against {loop}: narrow "
            f"{narrow['records/s'] / rate['narrow']:.2f}x, wide {wide['records/s'] / rate['wide']:.2f}x."
        )
    notes.append(
        "Neither loop writes positions or an offset map: each of its transactions is its records and the commit. "
        "py-txn polls, produces and commits in turn on one thread; the relay reads the next batch while the "
        "last one commits."
    )
    return {
        "title": "Baselines: transactional loops (go-txn, py-txn) on the same layouts",
        "columns": list(loop_rows[0]),
        "rows": loop_rows,
        "notes": notes,
    }


def _cluster_config(cluster: KafkaCluster) -> Any:
    from relay.settings import ClusterConfig

    return ClusterConfig(cluster.name, cluster.bootstrap_servers)


def _empty(cluster: KafkaCluster, layout: dict[str, int]) -> int:
    """Delete every record of the topics of ``layout`` (the topics and their partitions' logs stay); returns the
    sum of their end offsets, which deleting records leaves as they were."""
    client = admin(cluster)
    request = []
    for topic, partitions in layout.items():
        ends = end_offsets(cluster, topic, partitions)
        request += [TopicPartition(topic, p, end) for p, end in enumerate(ends) if end > 0]
    if request:
        for fut in client.delete_records(request, request_timeout=60).values():
            fut.result(timeout=120)
    return sum(tp.offset for tp in request)


def _create_topics(cluster: KafkaCluster, names: list[str], partitions: int, config: dict[str, str]) -> None:
    """Create ``names`` in one request and wait for them."""
    client = admin(cluster)
    futures = client.create_topics([NewTopic(n, partitions, 1, config=config) for n in names], operation_timeout=60)
    for fut in futures.values():
        fut.result(timeout=120)


def _positions_written(cluster: KafkaCluster, topic: str) -> dict[str, int]:
    """Committed records of a positions topic (partition 0), transactions, the most records in one, the
    first entries (``next`` -1, see below) and the late map points (a key's position again, with a point more)."""
    consumer = Consumer(
        {
            **cluster.client_conf(),
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    groups: list[int] = []
    last = -2
    first = late = 0
    newest: dict[bytes, int] = {}
    try:
        while True:
            msgs = consumer.consume(5000, 5.0)
            if not msgs:
                raise RuntimeError(f"no end of {topic} in sight")
            done = False
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    done = err.code() == KafkaError._PARTITION_EOF
                    continue
                offset = msg.offset() or 0
                # A partition's first entry, before any record: the scan of earlier releases' kfr-pos
                # headers found nothing (-1), written once so that no later start scans again.
                nxt = json.loads(msg.value() or b"{}").get("next", 0)
                first += nxt < 0
                late += newest.get(msg.key() or b"") == nxt
                newest[msg.key() or b""] = nxt
                if offset == last + 1 and groups:
                    groups[-1] += 1
                else:
                    groups.append(1)
                last = offset
            if done:
                break
    finally:
        consumer.close()
    return {
        "records": sum(groups),
        "transactions": len(groups),
        "most": max(groups, default=0),
        "first": first,
        "late": late,
    }


def _write_entries(cluster: KafkaCluster, name: str, topic: str, ghosts: list[SourcePartition]) -> None:
    """Entries of ``ghosts`` with full offset maps, written to the positions topic as a relay would (without a
    transaction: a read_committed reader sees them all the same)."""
    producer = Producer({**cluster.client_conf(), "linger.ms": 20, "enable.idempotence": True})
    points = tuple((i * 1000, i * 1000) for i in range(MAP_POINTS))
    entries = {sp: Entry(MAP_POINTS * 1000, points) for sp in ghosts}
    for key, value in positions.records(name, entries):
        while True:
            try:
                producer.produce(topic, value, key, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError(f"could not write {topic}")


if __name__ == "__main__":
    main()
