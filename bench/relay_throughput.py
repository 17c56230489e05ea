"""Scenario a (small records): our relay next to its baselines, with filters, and what its guarantees cost.

Two fresh sandbox clusters, ``src`` and ``dst``. The source topic is filled once with ``--records``
1 KiB records (JSON values with a header, see :func:`bench.clusters.make_values`) over
``--partitions`` partitions; then each contender copies it to ``dst`` in turn, alternately
(round 1: A B C ..., round 2: A B C ...), each time into a freshly created target topic:

* ``relay``: our relay, ``kafka-lfs-relay run --stop-at-end`` (single mode, exactly-once Kafka target),
  which takes the passthrough fast path here (no filter); ``relay-full``: the same with ``fast_path:
  false``, a ``Message`` per record as with a filter;
* ``relay+header`` / ``relay+json``: the same with a header filter / a JSON-field filter that every
  record passes, so the output is the same and the difference is the cost of the filter;
* ``mm2``: a dedicated MirrorMaker 2 (see ``bench/mirrormaker.py``);
* ``plain``: a plain confluent-kafka consume -> produce loop (``bench/plain_loop.py``);
* ``go`` / ``go-txn``: a minimal consume -> produce loop in Go with franz-go (``bench/gorelay``, built
  on first use, see ``bench/go_loop.py``), without and with one transaction per batch: what a
  compiled relay does on this machine;
* ``raw-produce`` / ``raw-consume``: Kafka's ``ProducerPerformance`` writing ``--records`` 1 KiB
  records to ``dst`` and ``ConsumerPerformance`` reading the source topic: the raw limit.

And the cost of our guarantees: ``relay-nocompress`` is our relay with the target
producer's ``compression.type: none`` (``go-nocompress``: the Go loop without lz4);
``relay-batch-N`` our relay with ``target.batch.max_records: N`` (``max_bytes`` raised where it
would cut the batch first); ``relay+provenance`` our relay with ``provenance: {enabled: true}`` (a
header stamped on every record, every record's headers read for the loop guard). Beside ``go``
vs ``go-txn`` they show how much of the gap to a compiled relay is exactly-once and how much is
Python.

Run alone: ``python -m bench.relay_throughput --records 100000 --runs 1``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import go_loop, plain_loop
from bench.clusters import (
    CONSUMER_FETCH,
    HEADER_NAME,
    HEADER_VALUE,
    JSON_FIELD,
    JSON_VALUE,
    LOG_APPEND,
    PRODUCER_BATCHING,
    RECORD_SIZE,
    OffsetWatcher,
    append_span,
    create_topic,
    delete_topics,
    fill_topic,
    fresh_clusters,
)
from bench.machine import machine_info
from bench.mirrormaker import MirrorMaker, describe, mm2_properties
from bench.paths import WORK
from bench.procs import Child, ProcStats, exit_on_sigterm, java_argv, write_log4j
from bench.relay_launch import (
    relay_argv,
    relay_env,
    revision_argv,
    revision_env,
    revision_tree,
    write_yaml,
)
from bench.results import MIB, Result, common_args, log, median, now_text, write_result
from kafka_lfs_relay.sandbox import KafkaCluster, cluster_entry
from relay import logs
from relay.units import parse_size

TOPIC = "small"
ALL = ("relay", "relay+header", "relay+json", "mm2", "plain", "go", "go-txn", "raw-produce", "raw-consume")
# The cost of our guarantees: run by default too (about 3 of the 9 minutes of a 3-run scenario at 1M records).
# Any relay-batch-N can be named; these are the default ones.
COST = (
    "relay-full", "relay+provenance", "relay-nocompress", "go-nocompress", "relay-batch-2000", "relay-batch-100000"
)  # fmt: skip
# Not run unless named: MirrorMaker 2 with exactly-once source support, and a candidate relay build.
OPTIONAL = ("mm2-eos", "candidate")
BATCH_CONTENDER = re.compile(r"relay-batch-(\d+)")
FILTERS: dict[str, list[dict[str, Any]]] = {
    "relay": [],
    "relay+header": [{"name": "header", "type": "header", "config": {"header": HEADER_NAME, "equals": HEADER_VALUE}}],
    "relay+json": [{"name": "json", "type": "json", "config": {"field": JSON_FIELD, "equals": JSON_VALUE}}],
}
PERF_HEAP = ("-Xmx512M",)  # kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh


class Run:
    """One measured run of one contender."""

    def __init__(self, contender: str, records: int) -> None:
        self.contender = contender
        self.records = records
        self.steady_rate = float("nan")
        self.wall_rate = float("nan")
        self.cpu = float("nan")
        self.peak_rss = 0
        self.extra: dict[str, Any] = {}

    def fill(self, stats: ProcStats, span: tuple[float, float] | None) -> Run:
        self.cpu = stats.cpu
        self.peak_rss = stats.peak_rss
        self.wall_rate = self.records / stats.wall
        if span is not None:
            self.steady_rate = self.records / max(span[1] - span[0], 1e-3)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "records": self.records,
            "records_per_s": self.steady_rate,
            "wall_records_per_s": self.wall_rate,
            "cpu_s": self.cpu,
            "peak_rss_mib": self.peak_rss / MIB,
            **self.extra,
        }


class Bench:
    """The clusters, the data set and how to run each contender once."""

    def __init__(self, args: argparse.Namespace, src: KafkaCluster, dst: KafkaCluster) -> None:
        self.args = args
        self.src = src
        self.dst = dst
        self.records: int = args.records
        self.partitions: int = args.partitions
        self.work = WORK / f"throughput-runs-{uuid.uuid4().hex[:6]}"
        self.children: list[Child] = []
        self.mm2_props = mm2_properties(src, dst, TOPIC, self.partitions)
        self.target_offsets = 0  # the target's offsets after the last run (records + transaction markers)

    def relay_settings(self, contender: str = "relay") -> dict[str, Any]:
        batch: dict[str, Any] = {
            "max_records": self.args.batch_records,
            "max_bytes": self.args.batch_bytes,
            "linger": self.args.linger,
        }
        settings: dict[str, Any] = {
            "mode": "single",
            "stop_at_end": True,
            "target": {"type": "kafka", "batch": batch},
            "max_in_flight": self.args.max_in_flight,
            "log": {"level": "info", "format": "json"},
        }
        if contender == "relay-nocompress":
            settings["target"]["kafka"] = {"compression.type": "none"}
        if contender == "relay-full":
            settings["fast_path"] = False
        if contender == "relay+provenance":
            settings["provenance"] = {"enabled": True}
        match = BATCH_CONTENDER.fullmatch(contender)
        if match:
            records = int(match.group(1))
            batch["max_records"] = records
            # Only the record count may cut a batch: room for 1.25 KiB a record, twice that in flight.
            need = -(-records * 1280 // MIB) * MIB
            if need > parse_size(self.args.batch_bytes, "--batch-bytes"):
                batch["max_bytes"] = f"{need // MIB}MiB"
                if 2 * need > parse_size(self.args.max_in_flight, "--max-in-flight"):
                    settings["max_in_flight"] = f"{2 * need // MIB}MiB"
        return settings

    def fresh_target(self) -> None:
        delete_topics(self.dst)
        create_topic(self.dst, TOPIC, self.partitions, LOG_APPEND)
        time.sleep(1.0)

    def run(self, contender: str, round_no: int) -> Run:
        runner: dict[str, Callable[[Path], Run]] = {
            "mm2": self.run_mm2,
            "mm2-eos": self.run_mm2,
            "plain": self.run_plain,
            "go": self.run_go,
            "go-txn": self.run_go,
            "go-nocompress": self.run_go,
            "raw-produce": self.run_raw_produce,
        }
        workdir = self.work / f"{round_no}-{contender.replace('+', '-')}"
        workdir.mkdir(parents=True, exist_ok=True)
        if contender == "raw-consume":
            return self.run_raw_consume(workdir)
        self.fresh_target()
        if contender.startswith("relay") or contender == "candidate":
            run = self.run_relay(contender, workdir)
        else:
            run = runner[contender](workdir)
        # Each committed transaction leaves a marker in every partition it wrote: one offset each.
        run.extra["target_offsets"] = self.target_offsets
        return run

    def _check_target(self, what: str) -> tuple[float, float]:
        watcher = OffsetWatcher(self.dst, TOPIC, self.partitions)
        try:
            total = watcher.total()
        finally:
            watcher.close()
        if total < self.records:
            raise RuntimeError(f"{what}: target holds {total} offsets, expected at least {self.records}")
        self.target_offsets = total
        return append_span(self.dst, TOPIC, self.partitions)

    def run_relay(self, contender: str, workdir: Path) -> Run:
        config = {
            "name": "bench",
            **self.relay_settings(contender),
            "sources": [cluster_entry(self.src, "src")],
            "topics": [{"source": TOPIC, "target": TOPIC}],
        }
        config["target"] = {**config["target"], **cluster_entry(self.dst, "dst")}
        if FILTERS.get(contender):
            config["filters"] = FILTERS[contender]
        path = write_yaml(workdir / "relay.yml", config)
        argv = relay_argv(path, "--stop-at-end")
        env, cwd = relay_env(), None
        if contender == "candidate" and self.args.candidate_rev:
            # An earlier revision's relay, same config as "relay": A/B in one invocation.
            cwd = revision_tree(self.args.candidate_rev)
            argv, env = revision_argv(cwd, path, "--stop-at-end"), revision_env(cwd)
        elif contender == "candidate":
            # The same CLI from another module (a candidate change), same config as "relay".
            argv[2] = self.args.candidate_module
        if self.args.profile and contender == "relay":
            # Collapsed stacks per thread (flamegraph.pl / speedscope can read them); the py-spy process
            # wraps the relay, so a profiled run's CPU and RSS figures include py-spy's own.
            spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
            if spy is None:
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            # --native pauses the process to unwind C stacks (py-spy refuses it with --nonblocking).
            how = ["--native"] if self.args.profile_native else ["--nonblocking"]
            argv = [spy, "record", *how, "--threads", "--format", "raw", "--rate", "200",
                    "-o", str(workdir / "profile.txt"), "--", *argv]  # fmt: skip
        child = Child(contender, argv, workdir / "relay.log", env=env, cwd=cwd)
        self.children.append(child)
        child.start()
        stats = child.wait(self.timeout)
        if stats.returncode != 0:
            raise RuntimeError(f"{contender} exited with {stats.returncode}:\n{child.log_tail()}")
        return Run(contender, self.records).fill(stats, self._check_target(contender))

    def run_mm2(self, workdir: Path) -> Run:
        # Done when the target's end offsets reach the record count. With exactly-once on
        # (mm2-eos), transaction markers take offsets too, so that moment can come a few
        # transactions early: its rate is then an upper bound.
        eos = workdir.name.endswith("mm2-eos")
        props = mm2_properties(self.src, self.dst, TOPIC, self.partitions, exactly_once=eos)
        mm2 = MirrorMaker(workdir, props)
        self.children.append(mm2.child)
        watcher = OffsetWatcher(self.dst, TOPIC, self.partitions)
        try:
            mm2.start()
            stats = mm2.wait_for_total(watcher, self.records, self.timeout)
        finally:
            watcher.close()
            mm2.stop()
        name = "mm2-eos" if eos else "mm2"
        return Run(name, self.records).fill(stats, self._check_target(name))

    def run_plain(self, workdir: Path) -> Run:
        argv = [
            sys.executable,
            "-m",
            "bench.plain_loop",
            "--source",
            self.src.bootstrap_servers,
            "--target",
            self.dst.bootstrap_servers,
            "--topic",
            TOPIC,
            "--out",
            TOPIC,
        ]
        child = Child("plain", argv, workdir / "plain.log", env=relay_env())
        self.children.append(child)
        stats = child.start().wait(self.timeout)
        if stats.returncode != 0:
            raise RuntimeError(f"plain loop exited with {stats.returncode}:\n{child.log_tail()}")
        return Run("plain", self.records).fill(stats, self._check_target("plain"))

    def run_go(self, workdir: Path) -> Run:
        name = workdir.name.split("-", 1)[1]
        argv = go_loop.argv(
            self.src.bootstrap_servers,
            self.dst.bootstrap_servers,
            TOPIC,
            TOPIC,
            transactions=name == "go-txn",
            compress=name != "go-nocompress",
        )
        child = Child(name, argv, workdir / "gorelay.log")
        self.children.append(child)
        stats = child.start().wait(self.timeout)
        if stats.returncode != 0:
            raise RuntimeError(f"{name} exited with {stats.returncode}:\n{child.log_tail()}")
        copied, txns = go_loop.copied(child.log_path.read_text(errors="replace"))
        if copied != self.records:
            raise RuntimeError(f"{name} copied {copied} records, expected {self.records}")
        run = Run(name, self.records).fill(stats, self._check_target(name))
        if txns:
            run.extra["transactions"] = txns
        return run

    def run_raw_produce(self, workdir: Path) -> Run:
        props = [f"bootstrap.servers={self.dst.bootstrap_servers}", *self.perf_producer_props()]
        args = ["--topic", TOPIC, "--num-records", str(self.records), "--record-size", str(RECORD_SIZE)]
        args += ["--throughput", "-1", "--producer-props", *props]
        log4j = write_log4j(workdir / "log4j2.properties", workdir / "tool.log")
        child = Child("raw-produce", java_argv("org.apache.kafka.tools.ProducerPerformance", args, PERF_HEAP, log4j),
                      workdir / "out.log")  # fmt: skip
        self.children.append(child)
        stats = child.start().wait(self.timeout)
        if stats.returncode != 0:
            raise RuntimeError(f"ProducerPerformance exited with {stats.returncode}:\n{child.log_tail()}")
        out = child.log_path.read_text()
        match = re.findall(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", out)
        run = Run("raw-produce", self.records).fill(stats, self._check_target("raw-produce"))
        if match:
            run.extra["tool_records_per_s"] = float(match[-1][1])
        return run

    def perf_producer_props(self) -> list[str]:
        return [f"{k}={v}" for k, v in PRODUCER_BATCHING.items()] + ["enable.idempotence=true"]

    def run_raw_consume(self, workdir: Path) -> Run:
        conf = workdir / "consumer.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in CONSUMER_FETCH.items()), encoding="utf-8")
        args = ["--bootstrap-server", self.src.bootstrap_servers, "--topic", TOPIC, "--messages", str(self.records)]
        args += ["--group", f"perf-{uuid.uuid4().hex[:8]}", "--consumer.config", str(conf), "--timeout", "60000"]
        log4j = write_log4j(workdir / "log4j2.properties", workdir / "tool.log")
        child = Child("raw-consume", java_argv("org.apache.kafka.tools.ConsumerPerformance", args, PERF_HEAP, log4j),
                      workdir / "out.log")  # fmt: skip
        self.children.append(child)
        stats = child.start().wait(self.timeout)
        if stats.returncode != 0:
            raise RuntimeError(f"ConsumerPerformance exited with {stats.returncode}:\n{child.log_tail()}")
        lines = [ln for ln in child.log_path.read_text().splitlines() if ln.count(",") >= 9]
        header = [h.strip() for h in lines[0].split(",")]
        values = dict(zip(header, (v.strip() for v in lines[-1].split(",")), strict=False))
        consumed = int(values["data.consumed.in.nMsg"])
        if consumed < self.records:
            raise RuntimeError(f"ConsumerPerformance read {consumed} of {self.records} records")
        run = Run("raw-consume", self.records).fill(stats, None)
        run.steady_rate = float(values["fetch.nMsg.sec"])
        run.extra["tool_nmsg_per_s"] = float(values["nMsg.sec"])
        run.extra["rebalance_ms"] = float(values["rebalance.time.ms"])
        return run

    @property
    def timeout(self) -> float:
        return max(300.0, self.records / 1000)

    def cleanup(self) -> None:
        for child in self.children:
            child.kill()
        if not self.args.keep_logs:
            shutil.rmtree(self.work, ignore_errors=True)


def summarize(contenders: list[str], runs: list[Run]) -> list[dict[str, Any]]:
    """One row per contender: medians over its runs (and, off the table, records per transaction)."""
    rows = []
    for name in contenders:
        mine = [r for r in runs if r.contender == name]
        if not mine:
            continue
        rate = median([r.steady_rate for r in mine])
        rows.append(
            {
                "contender": name,
                "records/s": rate,
                "MiB/s": rate * RECORD_SIZE / MIB,
                "records/s incl. start-up": median([r.wall_rate for r in mine]),
                "CPU s": median([r.cpu for r in mine]),
                "CPU s per 1M records": median([r.cpu * 1e6 / r.records for r in mine]),
                "peak RSS MiB": median([r.peak_rss / MIB for r in mine]),
                "runs": len(mine),
            }
        )
        # Commit markers on the target (offsets beyond the records): one in each partition a
        # transaction wrote, so records / markers is how many records a transaction wrote to a partition.
        markers = median([r.extra.get("target_offsets", r.records) - r.records for r in mine])
        if markers > 0:
            rows[-1]["records per partition per transaction"] = mine[0].records / markers
        txns = [r.extra["transactions"] for r in mine if r.extra.get("transactions")]
        if txns:
            rows[-1]["records per transaction"] = mine[0].records / median(txns)
    return rows


# (A, B, what A vs B isolates): the cost-of-guarantees comparisons, each shown when both ran.
COMPARISONS = (
    ("relay", "go-txn", "same guarantees (a transaction per batch, idempotent, acks=all, lz4, partition kept): "
     "Python, librdkafka and our relay's own work vs a compiled loop"),
    ("go-txn", "go", "exactly-once in a compiled loop: one transaction per batch vs none"),
    ("plain", "go", "the bare loop (no transactions) in Python with confluent-kafka vs Go with franz-go"),
    ("relay", "plain", "what our relay adds in Python: transactions, resume positions, batching, metrics"),
    ("relay", "relay-full", "the passthrough fast path vs a Message per record (fast_path: false)"),
    ("relay+provenance", "relay", "a provenance header stamped on every record, and the loop guard reading headers"),
    ("relay", "relay-nocompress", "lz4 compression of the target batches (librdkafka, C)"),
    ("go", "go-nocompress", "lz4 compression of the target batches (franz-go, pure Go)"),
)  # fmt: skip


def guarantees(rows: list[dict[str, Any]], batch_records: int) -> dict[str, Any] | None:
    """The cost-of-guarantees section: ratios of contenders of this same run (None if nothing to compare)."""
    by = {r["contender"]: r for r in rows}
    pairs = [(a, b, what) for a, b, what in COMPARISONS if a in by and b in by]
    for row in rows:
        match = BATCH_CONTENDER.fullmatch(row["contender"])
        if match and "relay" in by:
            size = int(match.group(1))
            pairs.append((row["contender"], "relay", f"transactions of {size:,} records instead of {batch_records:,}"))
    if not pairs:
        return None
    cpu = "CPU s per 1M records"
    table = [
        {
            "A vs B": f"{a} vs {b}",
            "records/s A / B": by[a]["records/s"] / by[b]["records/s"],
            "CPU s per 1M, A": by[a][cpu],
            "CPU s per 1M, B": by[b][cpu],
            "CPU per record A / B": by[a][cpu] / by[b][cpu],
            "what the difference is": what,
        }
        for a, b, what in pairs
    ]
    notes = []
    if {"relay", "go", "go-txn"} <= by.keys():
        relay, go, txn = by["relay"][cpu], by["go"][cpu], by["go-txn"][cpu]
        notes.append(
            f"Of the CPU gap between our relay and the plain Go loop ({relay:.1f} vs {go:.1f} CPU s per 1M records, "
            f"{relay - go:+.1f}), exactly-once in Go costs {txn - go:+.1f} (go-txn vs go) and the rest, "
            f"{relay - txn:+.1f}, is Python and our relay's own work (relay vs go-txn). Throughput: relay reaches "
            f"{by['relay']['records/s'] / by['go-txn']['records/s']:.0%} of go-txn's records/s and go-txn "
            f"{by['go-txn']['records/s'] / by['go']['records/s']:.0%} of go's."
        )
    lz4 = [
        f"{by[a][cpu] - by[b][cpu]:+.1f} to {who} ({a} vs {b})"
        for a, b, who in (("relay", "relay-nocompress", "our relay"), ("go", "go-nocompress", "the Go loop"))
        if a in by and b in by
    ]
    if lz4:
        notes.append(
            "lz4 adds, in CPU s per 1M records, " + " and ".join(lz4) + ", on values "
            "whose random padding compresses little (see bench.clusters.make_values): librdkafka compresses in C, "
            "franz-go in pure Go. go-nocompress is the closest to a relay without our guarantees (no transactions, "
            "no compression), though it keeps the partitions."
        )
    if {"relay-nocompress", "go-nocompress"} <= by.keys():
        ours, theirs = by["relay-nocompress"][cpu], by["go-nocompress"][cpu]
        notes.append(
            f"Without lz4 on either side (relay-nocompress vs go-nocompress: {ours:.1f} vs {theirs:.1f} CPU s per 1M "
            f"records, {ours / theirs:.1f}x) the gap is what Python, librdkafka, exactly-once and our relay's work "
            "cost together, with no compressor in it."
        )
    key = "records per partition per transaction"
    sizes = [f"{r['contender']} {r[key]:,.0f}" for r in rows if key in r]
    if sizes:
        txn = "records per transaction"
        counted = [f"{r['contender']} {r[txn]:,.0f}" for r in rows if txn in r]
        notes.append(
            "How big the transactions were: records per partition per transaction (records / commit markers "
            "on the target, a transaction leaving one in each partition it wrote): "
            + ", ".join(sizes)
            + "."
            + (f" Records per transaction, as counted by the Go loop: {', '.join(counted)}." if counted else "")
        )
    notes.append(
        "CPU s are the contender's own process only: what transactions cost the brokers (markers, the "
        "transaction coordinator) is not in them, but it is in records/s, since the brokers share these 2 cores."
    )
    return {
        "title": "The cost of our guarantees",
        "columns": list(table[0]),
        "rows": table,
        "notes": notes,
    }


def goals(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Goal checks and derived notes (filter cost, raw limit)."""
    by = {r["contender"]: r for r in rows}
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    relay = by.get("relay")
    if relay is None:
        return out, notes
    mm2 = by.get("mm2")
    if mm2 is not None:
        out.append(
            {
                "goal": "small-record throughput >= MirrorMaker 2's",
                "measured": f"{relay['records/s']:,.0f} vs {mm2['records/s']:,.0f} records/s "
                f"({relay['records/s'] / mm2['records/s']:.2f}x)",
                "met": relay["records/s"] >= mm2["records/s"],
            }
        )
        out.append(
            {
                "goal": "peak RSS below MirrorMaker 2's",
                "measured": f"{relay['peak RSS MiB']:,.0f} vs {mm2['peak RSS MiB']:,.0f} MiB",
                "met": relay["peak RSS MiB"] < mm2["peak RSS MiB"],
            }
        )
    go_txn = by.get("go-txn")
    if go_txn is not None:
        ours, theirs = relay["CPU s per 1M records"], go_txn["CPU s per 1M records"]
        out.append(
            {
                "goal": "CPU per record within 1.25x the transactional Go loop's (go-txn, same settings)",
                "measured": f"{ours:.2f} vs {theirs:.2f} CPU s per 1M records ({ours / theirs:.2f}x)",
                "met": ours <= 1.25 * theirs,
            }
        )
    header = by.get("relay+header")
    if header is not None:
        ratio = header["records/s"] / relay["records/s"]
        out.append(
            {
                "goal": "a header filter every record passes keeps >= 0.8x the relay's throughput (relay+header)",
                "measured": f"{header['records/s']:,.0f} vs {relay['records/s']:,.0f} records/s ({ratio:.2f}x)",
                "met": ratio >= 0.8,
            }
        )
    candidate = by.get("candidate")
    if candidate is not None:  # --candidate-rev: an earlier commit of the relay, run the same way
        ratio = relay["records/s"] / candidate["records/s"]
        out.append(
            {
                "goal": "no regression against the candidate revision (within 5%, the spread of a median of runs)",
                "measured": f"{relay['records/s']:,.0f} vs {candidate['records/s']:,.0f} records/s ({ratio:.2f}x)",
                "met": ratio >= 0.95,
            }
        )
    raws = [by[n]["records/s"] for n in ("raw-produce", "raw-consume") if n in by]
    if raws:
        limit = min(raws)
        notes.append(
            f"Raw limit = min(raw produce, raw consume) = {limit:,.0f} records/s; our relay reaches "
            f"{relay['records/s'] / limit:.0%} of it."
        )
        out.append(
            {
                "goal": "small-record throughput >= half the raw limit",
                "measured": f"{relay['records/s']:,.0f} vs {limit:,.0f} records/s ({relay['records/s'] / limit:.0%})",
                "met": relay["records/s"] >= limit / 2,
            }
        )
    for name in ("relay+header", "relay+json"):
        if name in by:
            cost = 1 - by[name]["records/s"] / relay["records/s"]
            cpu = by[name]["CPU s"] - relay["CPU s"]
            note = (
                f"{name}: the filter costs {cost:.1%} of the throughput "
                f"({by[name]['records/s']:,.0f} vs {relay['records/s']:,.0f} records/s; a negative cost is noise) "
                f"and {cpu:+.1f} CPU s; every record passes it, so the output is the same as relay's."
            )
            full = by.get("relay-full")
            if full is not None:  # a filter needs a Message per record: most of its cost is leaving the fast path
                note += (
                    f" Against relay-full (a Message per record, no filter) it is "
                    f"{by[name]['records/s'] / full['records/s']:.2f}x the records/s and "
                    f"{by[name]['CPU s'] - full['CPU s']:+.1f} CPU s."
                )
            notes.append(note)
    return out, notes


def _candidate_setting(args: argparse.Namespace) -> dict[str, str]:
    """What contender "candidate" was, when it ran."""
    if args.candidate_rev:
        return {"candidate": f"our relay at git revision {args.candidate_rev}, same config as relay"}
    if args.candidate_module:
        return {"candidate": f"our relay's CLI from module {args.candidate_module}, same config as relay"}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.relay_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    common_args(parser, runs=3)
    parser.add_argument(
        "--contenders",
        default=",".join(ALL + COST),
        help=f"comma-separated, of {','.join(ALL + COST + OPTIONAL)} and any relay-batch-N (default: all but "
        f"{','.join(OPTIONAL)})",
    )
    parser.add_argument("--batch-records", type=int, default=20_000, help="relay target.batch.max_records")
    parser.add_argument("--batch-bytes", default="64MiB", help="relay target.batch.max_bytes (its default: 64MiB)")
    parser.add_argument("--linger", default="50ms", help="relay target.batch.linger")
    parser.add_argument("--max-in-flight", default="256MiB", help="relay max_in_flight")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record a py-spy profile (collapsed stacks) of each plain relay run; keep logs to see it",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: include C frames (the client library's, librdkafka's) in the stacks",
    )
    parser.add_argument(
        "--candidate-module",
        help="also run contender 'candidate': our relay's CLI from this module (a candidate change to A/B)",
    )
    parser.add_argument(
        "--candidate-rev",
        help="also run contender 'candidate': the relay of this git revision (e.g. the last release), A/B",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep build/bench/work/throughput-runs-*")
    parser.add_argument("--name", default="a_throughput", help="result file name")
    args = parser.parse_args()
    logs.configure("warning")  # log lines (librdkafka's, through structlog) from warning up, on stderr
    exit_on_sigterm()
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if (args.candidate_module or args.candidate_rev) and "candidate" not in contenders:
        contenders.insert(contenders.index("relay") + 1 if "relay" in contenders else 0, "candidate")
    unknown = {c for c in contenders if c not in {*ALL, *COST, *OPTIONAL} and not BATCH_CONTENDER.fullmatch(c)}
    if unknown:
        parser.error(f"unknown contenders: {sorted(unknown)}")
    if {"go", "go-txn", "go-nocompress"} & set(contenders):
        go_loop.binary()  # built (or found missing) before any cluster starts
    machine = machine_info()
    peak_load = 0.0
    started = now_text()
    runs: list[Run] = []
    with fresh_clusters(["src", "dst"], "throughput") as clusters:
        src, dst = clusters["src"], clusters["dst"]
        bench = Bench(args, src, dst)
        try:
            create_topic(src, TOPIC, args.partitions)
            seconds = fill_topic([src], TOPIC, args.records, args.partitions)
            log(f"source topic filled: {args.records:,} records in {seconds:.1f}s")
            for round_no in range(1, args.runs + 1):
                for contender in contenders:
                    log(f"round {round_no}/{args.runs}: {contender}")
                    run = bench.run(contender, round_no)
                    runs.append(run)
                    # Others' load shows here too (ours alone is about 3: two brokers and a contender).
                    peak_load = max(peak_load, os.getloadavg()[0])
                    log(
                        f"  {contender}: {run.steady_rate:,.0f} records/s steady, {run.wall_rate:,.0f} incl. start-up, "
                        f"CPU {run.cpu:.1f}s, peak RSS {run.peak_rss / MIB:.0f} MiB"
                    )
        finally:
            bench.cleanup()
    rows = summarize(contenders, runs)
    goal_rows, notes = goals(rows)
    cost = guarantees(rows, args.batch_records)
    notes = [
        *notes,
        "records/s: from the first to the last record appended to the target (broker LogAppendTime); "
        "raw-consume: ConsumerPerformance's fetch.nMsg.sec (excludes its group join). "
        "'incl. start-up' divides by the time from process start to the last record.",
        "CPU s and peak RSS: the contender's own process (all threads), from wait4 or /proc at completion; "
        "they include start-up.",
    ]
    result = Result(
        name=args.name,
        title=f"a. Small records: {args.records:,} x 1 KiB records on {args.partitions} partitions, source -> target",
        columns=[
            "contender",
            "records/s",
            "MiB/s",
            "records/s incl. start-up",
            "CPU s",
            "CPU s per 1M records",
            "peak RSS MiB",
            "runs",
        ],
        rows=rows,
        settings={
            "records": args.records,
            "record": "1 KiB JSON value (random base64 padding), no key, one header (source=bench)",
            "partitions": args.partitions,
            "runs per contender (alternating order)": args.runs,
            "contender order per round": contenders,
            **_candidate_setting(args),
            "relay": {
                **bench.relay_settings(),
                "target producer": "transactional (one transaction per batch), idempotent, acks=all, linger.ms=5, "
                "batch.size=1000000, compression lz4",
                "filters": {k: v for k, v in FILTERS.items() if v},
                "cost-of-guarantees runs": {
                    c: _changed(bench.relay_settings(), bench.relay_settings(c))
                    for c in contenders
                    if c in ("relay-nocompress", "relay-full") or BATCH_CONTENDER.fullmatch(c)
                },
            },
            "plain loop": plain_loop.SETTINGS,
            "go loop (bench/gorelay)": go_loop.SETTINGS,
            "mm2 (mm2.properties)": describe(bench.mm2_props),
            "mm2 JVM": "-Xms256M -Xmx2G + kafka-run-class.sh performance options (as connect-mirror-maker.sh)",
            "mm2 exactly-once": "mm2: off (dst.exactly.once.source.support=disabled, the default), at-least-once; "
            "mm2-eos (when run): the same with dst.exactly.once.source.support=enabled",
            "raw-produce": "ProducerPerformance --record-size 1024 --throughput -1 --producer-props "
            + " ".join(bench.perf_producer_props())
            + " (JVM -Xmx512M)",
            "raw-consume": "ConsumerPerformance --messages N, consumer.config "
            + " ".join(f"{k}={v}" for k, v in CONSUMER_FETCH.items())
            + " (JVM -Xmx512M)",
            "brokers": "one single-node KRaft broker per cluster (sandbox defaults: -Xmx512m, SerialGC), loopback",
            "target topic": "created fresh before every run, message.timestamp.type=LogAppendTime",
        },
        notes=notes,
        goals=goal_rows,
        sections=[cost] if cost else [],
        runs=[r.as_dict() for r in runs],
        machine={**machine, "loadavg_1m_peak": round(peak_load, 2)},
        started=started,
        finished=now_text(),
        chart={
            "type": "bar",
            "value": "records/s",
            "label": "records/s (median)",
            "also": {"value": "CPU s per 1M records", "label": "CPU s per 1M records (median; the robust figure)"},
        },
    )
    write_result(result)
    from bench.results import markdown_table

    print(markdown_table(result.columns, rows))
    for goal in goal_rows:
        print(f"- {'MET' if goal['met'] else 'MISSED'}: {goal['goal']}: {goal['measured']}")
    for note in notes:
        print(f"- {note}")
    if cost:
        print(f"\n{cost['title']}:\n" + markdown_table(cost["columns"], cost["rows"]))
        for note in cost["notes"]:
            print(f"- {note}")


def _changed(base: dict[str, Any], other: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The settings of ``other`` that differ from ``base``, as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in other.items():
        if isinstance(value, dict):
            out.update(_changed(base.get(key) or {}, value, f"{prefix}{key}."))
        elif base.get(key) != value:
            out[f"{prefix}{key}"] = value
    return out


if __name__ == "__main__":
    main()
