"""The checker: read every target back (read_committed) and prove, record by record, what arrived.

The comparison itself (:func:`compare`, :func:`parse_reported_gaps`, :func:`classify_orphans`,
:func:`explain`) is pure and unit-tested; :func:`scan` and :func:`verify_envelopes` do the I/O.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.chaos.model import MIB, SHAPES, Entry, Headers, client_conf, identity, record_fields, sha256
from kafka_lfs_relay.sandbox import KafkaCluster


@dataclass(frozen=True)
class Seen:
    """One committed record on a target, reduced to what is compared: no payload is kept."""

    key: bytes | None
    digest: str | None  # SHA-256 of the value (None: a null value), or for an envelope the sha256 it claims
    size: int  # value length, or for an envelope the size it claims
    headers: Headers
    timestamp: int = 0
    envelope_key: str | None = None  # the object an envelope points at


@dataclass(frozen=True)
class Gap:
    """Offsets [start, end) of one partition of one generation of a source topic, deleted before they were relayed."""

    partition: int
    start: int
    end: int
    generation: int = 0

    def holds(self, entry: Entry) -> bool:
        """Whether ``entry`` was deleted with this gap."""
        return (
            entry.partition == self.partition
            and entry.generation == self.generation
            and self.start <= entry.offset < self.end
        )


@dataclass
class Verdict:
    """What one target holds compared with what was produced."""

    pipe: str
    target: str
    expected: int = 0
    found: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    foreign: int = 0
    gap_expected: int = 0
    gap_present: int = 0
    removed: int = 0  # records on a target topic that was then deleted: not expected any more
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Exactly once and in order, every field as produced, apart from the reported gap."""
        return not (
            self.lost or self.duplicated or self.reordered or self.corrupted or self.foreign or self.gap_present
        )

    def note(self, text: str) -> None:
        """Keep the first few problems, as examples."""
        if len(self.problems) < 10:
            self.problems.append(text)


def compare(
    pipe: str,
    target: str,
    expected: Mapping[int, Sequence[Entry]],
    seen: Mapping[int, Sequence[Seen]],
    gaps: Collection[Gap] = (),
    check_value: Callable[[Entry, Seen], str | None] | None = None,
    removed: Collection[int] = (),
) -> Verdict:
    """Per partition: every expected record once, in the source partition's order, every field as produced.

    ``expected``: the ledger's records per source partition; ``seen``: the target's, per target
    partition (the same number: partitions are preserved). A record is known by its ``chaos-seq``
    header. ``gaps``: records the relay reported lost, which must be absent. ``removed``: sequence
    numbers of records that were on the target topic when it was deleted and created again; they
    are not expected any more, and one that arrives again was relayed twice. ``check_value`` may
    add a target-specific check (None when fine, else why not).
    """
    verdict = Verdict(pipe, target)
    by_seq = {e.seq: e for entries in expected.values() for e in entries}
    gapped = {e.seq for e in by_seq.values() if any(g.holds(e) for g in gaps)}
    removed = set(removed)
    counted: dict[int, int] = {}
    for partition in sorted(set(expected) | set(seen)):
        last: tuple[int, int] = (-1, -1)
        for index, rec in enumerate(seen.get(partition, [])):
            verdict.found += 1
            ident = identity(rec.headers)
            entry = by_seq.get(ident[1]) if ident is not None and ident[0] == pipe else None
            where = f"{target} partition {partition} index {index}"
            if entry is None:
                verdict.foreign += 1
                verdict.note(f"{where}: a record that was never produced ({ident or rec.key!r})")
                continue
            counted[entry.seq] = counted.get(entry.seq, 0) + 1
            what = f"source offset {entry.offset} of generation {entry.generation} ({pipe} {entry.seq})"
            if counted[entry.seq] > 1:
                verdict.duplicated += 1
                verdict.note(f"{where}: {what} appears again")
                continue
            if entry.seq in removed:
                verdict.duplicated += 1
                verdict.note(f"{where}: {what} was on the target topic deleted before, and was relayed again")
                continue
            if entry.partition == partition and entry.position < last:
                verdict.reordered += 1
                verdict.note(f"{where}: {what} after offset {last[1]} of generation {last[0]}")
            if entry.partition == partition:
                last = max(last, entry.position)
            if entry.seq in gapped:
                verdict.gap_present += 1
                verdict.note(f"{where}: {what} is in a reported gap but arrived")
            why = field_problem(pipe, entry, rec, partition)
            if why is None and check_value is not None:
                why = check_value(entry, rec)
            if why is not None:
                verdict.corrupted += 1
                verdict.note(f"{where}: {what}: {why}")
    for partition in sorted(expected):  # once every partition was read: a misplaced record is not lost
        for entry in expected[partition]:
            if entry.seq in gapped:
                verdict.gap_expected += 1
            elif entry.seq in removed:
                verdict.removed += 1
            else:
                verdict.expected += 1
                if entry.seq not in counted:
                    verdict.lost += 1
                    verdict.note(f"{target} partition {partition}: source offset {entry.offset} of generation "
                                 f"{entry.generation} ({pipe} {entry.seq}) missing")  # fmt: skip
    return verdict


def field_problem(pipe: str, entry: Entry, rec: Seen, partition: int) -> str | None:
    """Why ``rec`` (read from target ``partition``) is not the record ``entry`` was produced as; None if it is.

    Every field: the partition, the key (null distinct from empty), the value (its size and
    SHA-256; null distinct from empty), the headers in order (null values distinct from empty
    ones) and the timestamp.
    """
    key, headers = record_fields(pipe, entry.seq, entry.shape)
    shape = SHAPES[entry.shape]
    if partition != entry.partition:
        return f"in partition {partition}, produced into {entry.partition}"
    if rec.key != key:
        return f"key {_show(rec.key)}, produced {_show(key)} ({shape.key})"
    if (rec.digest is None) != (entry.sha256 is None):
        return f"value {'null' if rec.digest is None else 'not null'}, produced {shape.value}"
    if rec.size != entry.size:
        return f"value of {rec.size} bytes, produced {entry.size}"
    if rec.digest != entry.sha256:
        return "value differs from what was produced"
    if rec.headers != headers:
        return f"headers {rec.headers!r} differ from the {shape.headers} headers produced {headers!r}"
    if rec.timestamp != entry.timestamp:
        return f"timestamp {rec.timestamp}, produced {entry.timestamp}"
    return None


def _show(key: bytes | None) -> str:
    return "null" if key is None else repr(key[:40])


# -- gaps -----------------------------------------------------------------------------------------------
_FAIL_GAP = re.compile(r"topic (\S+) partition (\d+): offsets \[(\d+), (\d+)\) were deleted")
_SKIP_GAP = "records deleted before they were relayed are skipped"
_RANGE = re.compile(r"\[(\d+), (\d+)\)")


def parse_reported_gaps(
    events: Iterable[Mapping[str, Any]], lines: Iterable[str]
) -> dict[str, set[tuple[int, int, int]]]:
    """Gaps the relay reported: ``{"fail": {(partition, start, end)}, "skip": {...}}``.

    ``events`` are its JSON log lines (the ``on_gap: skip`` line carries ``missing="[a, b)"``),
    ``lines`` its other output (the ``on_gap: fail`` stop line names the range).
    """
    out: dict[str, set[tuple[int, int, int]]] = {"fail": set(), "skip": set()}
    for event in events:
        if str(event.get("event", "")).startswith(_SKIP_GAP):
            match = _RANGE.search(str(event.get("missing", "")))
            if match:
                out["skip"].add((int(event["partition"]), int(match.group(1)), int(match.group(2))))
        for text in (str(event.get("error", "")),):
            match = _FAIL_GAP.search(text)
            if match:
                out["fail"].add((int(match.group(2)), int(match.group(3)), int(match.group(4))))
    for line in lines:
        match = _FAIL_GAP.search(line)
        if match:
            out["fail"].add((int(match.group(2)), int(match.group(3)), int(match.group(4))))
    return out


# -- orphans ------------------------------------------------------------------------------------------
def classify_orphans(
    listed: Iterable[str],
    referenced: set[str],
    prefix: str,
    relay: str,
    topic: str,
    gapped: Collection[Entry],
    removed: Collection[Entry] = (),
) -> dict[str, list[str]]:
    """Objects no envelope points to, by reason.

    Object keys are ``{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}`` (the relay's default
    template): a retry rewrites the same object. The only expected orphans are objects uploaded
    for records whose transaction never committed and that were then deleted from the sources
    before being relayed again (``gapped``: the gap): the relay cannot write them again, and
    nothing deletes the object. Objects of another relay name come from a relay started under a
    new name (the operations nemesis), which must have refused to start. Objects of records that were
    on a target topic deleted since (``removed``: the operations nemesis recreated it) lost their
    envelopes with it.
    """
    out: dict[str, list[str]] = {}
    gone = {(e.partition, e.offset, e.sha256) for e in removed}
    pattern = re.compile(rf"^{re.escape(prefix)}/([^/]+)/{re.escape(topic)}/(\d+)/(\d+)-([0-9a-f]{{64}})$")
    in_gap = {(e.partition, e.offset, e.sha256) for e in gapped}
    for key in sorted(set(listed) - referenced):
        match = pattern.match(key)
        if match is None:
            reason = "unexplained: a key the relay does not make"
        elif match.group(1) != relay:
            reason = f"unexplained: uploaded by relay {match.group(1)!r} (started under a new name)"
        elif (int(match.group(2)), int(match.group(3)), match.group(4)) in in_gap:
            reason = "uploaded, transaction aborted (relay killed or stopped), record then deleted (gap)"
        elif (int(match.group(2)), int(match.group(3)), match.group(4)) in gone:
            reason = "its envelope was deleted with its target topic (target recreated)"
        else:
            reason = "unexplained: the record was relayed again but its envelope points elsewhere, or never"
        out.setdefault(reason, []).append(key)
    return out


# -- exits and error lines -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A fault's span, for explaining what relays said during and after it."""

    kind: str
    subject: str  # relay name, cluster name, "s3", "mirror" (the gap)
    begin: float
    end: float


FENCING = frozenset({"relay_pause", "relay_kill", "overlap_deploy", "rolling_restart", "target_recreated"})
"""Faults and operations after which a relay may be fenced: another instance of it started, or (group
mode) a member left or came back and the partitions moved."""
SLACK_BEFORE = 5.0
SLACK_AFTER = 180.0

_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("internal", re.compile(r"internal error|Traceback")),
    ("gap", re.compile(r"deleted \(retention\)|no longer in the log|deleted before they were relayed")),
    ("fenced", re.compile(r"fenc", re.I)),
    ("s3", re.compile(r"\bS3\b|s3|bucket|upload|object|endpoint", re.I)),
    ("cluster", re.compile(r"source|target|broker|transaction|timed out|timeout|connect|Kafka", re.I)),
]


def _hms(epoch: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(epoch))


_CLUSTER_NAMES = re.compile(r"\b(east|west|dr|plain)\b")


def explain(
    text: str, relay: str, role: str, when: float, windows: Sequence[Window], clusters_of: Mapping[str, Sequence[str]]
) -> str | None:
    """Which fault explains ``text`` (an error line of ``relay`` at ``when``), or None if none does.

    ``clusters_of``: the clusters each relay role talks to. A line that names clusters is explained
    only by an outage of one of those (of the ones the relay uses); a line about S3 only by an S3
    outage; a fencing only by a zombie or a kill of a group member, or an outage of the source that
    coordinates the group; a gap only by the gap the nemesis made, after it was made.
    """
    kind = next((name for name, rule in _RULES if rule.search(text)), "other")
    if kind == "internal":
        return None

    def near(w: Window) -> bool:
        return w.begin - SLACK_BEFORE <= when <= w.end + SLACK_AFTER

    if kind == "gap":
        made = [w for w in windows if w.kind == "gap" and role == "mirror" and w.begin - SLACK_BEFORE <= when]
        return "the gap the nemesis made" if made else None
    used = set(clusters_of.get(role, ()))
    named = set(_CLUSTER_NAMES.findall(text)) & used
    if kind == "cluster":
        # A topic this relay reads was deleted and created again (a source topic, or for the hydrator
        # dr/mirror, the mirror's target): it is missing for a moment (its source looks down), and a
        # group member stops to relay it from its beginning.
        recreated = [
            f"{w.kind} at {_hms(w.begin)}"
            for w in windows
            if w.subject == relay
            and (w.kind == "source_recreated" or (w.kind == "target_recreated" and role == "hydrate"))
            and near(w)
        ]
        if recreated:
            return recreated[-1]
    if kind == "fenced":
        hit = [
            f"{w.kind} of {w.subject}"
            for w in windows
            if near(w)
            and (
                (w.kind in FENCING and (w.subject == relay or role == "group"))
                or (w.kind == "broker_kill" and w.subject in used)
            )
        ]
        return hit[-1] if hit else None
    s3 = [f"S3 outage at {_hms(w.begin)}" for w in windows if w.kind == "s3_kill" and near(w)]
    if kind == "s3" and not named:
        return s3[-1] if s3 and role in ("mirror", "hydrate") else None
    outages = [
        f"outage of {w.subject} at {_hms(w.begin)}"
        for w in windows
        if w.kind == "broker_kill" and near(w) and w.subject in (named or used)
    ]
    if outages:
        return outages[-1]
    if not named:
        # A transaction that timed out while this relay was stopped.
        own = [
            f"{w.kind} of this relay at {_hms(w.begin)}"
            for w in windows
            if w.kind in ("relay_pause", "relay_kill") and w.subject == relay and near(w)
        ]
        if own and re.search(r"transaction|timed out|timeout", text, re.I):
            return own[-1]
    return None


def windows_from(events: Sequence[Mapping[str, Any]]) -> list[Window]:
    """Fault and operation spans from the fault log's begin/end events (an operation's, one per relay it names)."""
    out: list[Window] = []
    open_: dict[tuple[str, str], float] = {}
    for ev in events:
        kind, phase = str(ev["kind"]), str(ev["phase"])
        if "relays" in ev:
            subjects = [str(r) for r in ev["relays"]]
        else:
            subjects = [str(ev.get("relay") or ev.get("cluster") or ("s3" if kind == "s3_kill" else kind))]
        for subject in subjects:
            if phase == "begin":
                open_[(kind, subject)] = float(ev["wall"])
                if kind in ("delete_behind", "burst"):
                    out.append(Window(kind, subject, float(ev["wall"]), float(ev["wall"])))
            elif phase == "end" and (kind, subject) in open_:
                out.append(Window(kind, subject, open_.pop((kind, subject)), float(ev["wall"])))
    for (kind, subject), begin in open_.items():
        out.append(Window(kind, subject, begin, time.time()))
    return out


# -- reading targets back ------------------------------------------------------------------------------
def partition_count(cluster: KafkaCluster, topic: str, timeout: float = 30) -> int:
    """How many partitions ``topic`` has on ``cluster`` (0 if it does not exist)."""
    consumer = Consumer({**client_conf(cluster), "group.id": "chaos-meta"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        return 0 if meta is None or meta.error is not None else len(meta.partitions)
    finally:
        consumer.close()


def scan(
    cluster: KafkaCluster,
    topic: str,
    partitions: int,
    on_record: Callable[[int, Any], None],
    timeout: float,
    upto: Mapping[int, int] | None = None,
) -> int:
    """Every committed record of ``topic``, each partition in log order, handed to ``on_record``.

    Reads the first ``partitions`` partitions, or as many as the topic has if fewer (a target the
    relay did not grow), all at once; returns how many it read. ``upto``: per partition, stop
    before this offset. Streams: nothing is kept here, so targets of many GiB can be read.
    """
    have = min(partitions, partition_count(cluster, topic))
    stops = {p: (upto or {}).get(p) for p in range(have)}
    open_ = {p for p, stop in stops.items() if stop is None or stop > 0}
    if not open_:
        return have
    consumer = Consumer(
        {
            **client_conf(cluster),
            "group.id": f"chaos-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
            "fetch.max.bytes": 64 * MIB,
            "max.partition.fetch.bytes": 16 * MIB,
            "queued.max.messages.kbytes": 128 * 1024,
        }
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(open_)])
        while open_:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} on {cluster.name} took over {timeout:.0f}s")
            for msg in consumer.consume(500, 1.0):
                partition, err = msg.partition(), msg.error()
                if partition not in open_:
                    continue
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_.discard(partition)
                        continue
                    raise RuntimeError(f"reading {topic}/{partition} on {cluster.name}: {err.str()}")
                stop = stops[partition]
                if stop is not None and msg.offset() >= stop:
                    open_.discard(partition)
                    continue
                on_record(partition, msg)
    finally:
        consumer.close()
    return have


def seen_of(msg: Any, envelope_key: str | None = None, digest: str | None = None, size: int | None = None) -> Seen:
    """A :class:`Seen` from a consumed record (digest and size of its value unless given); null stays null."""
    value = msg.value()
    headers = tuple((k, v) for k, v in (msg.headers() or []))
    return Seen(
        msg.key(),
        digest if digest is not None else sha256(value),
        size if size is not None else len(value or b""),
        headers,
        msg.timestamp()[1],
        envelope_key,
    )


def dumps(data: Any) -> str:
    """JSON for the summary."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)
