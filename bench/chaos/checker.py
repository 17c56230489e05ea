"""The checker: read every target back (read_committed) and prove, record by record, what arrived.

The comparison itself (:func:`compare`, :func:`parse_reported_gaps`, :func:`classify_orphans`,
:func:`explain`) is pure and unit-tested; :func:`scan` and :func:`verify_envelopes` do the I/O.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.chaos.model import MIB, Entry, Headers, client_conf, parse_key, record_headers, sha256
from kafka_lfs_relay.sandbox import KafkaCluster

POSITION_HEADER = "kfr-pos"


@dataclass(frozen=True)
class Seen:
    """One committed record on a target, reduced to what is compared: no payload is kept."""

    key: bytes | None
    digest: str  # SHA-256 of the value, or for an envelope the sha256 it claims
    size: int  # value length, or for an envelope the size it claims
    headers: Headers
    envelope_key: str | None = None  # the object an envelope points at


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
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Exactly once and in order, apart from the reported gap."""
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
    gaps: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    check_value: Callable[[Entry, Seen], str | None] | None = None,
) -> Verdict:
    """Per partition: every expected record once, in source offset order, equal to what was produced.

    ``gaps``: per partition, the half-open offset ranges the relay reported lost; records there must
    be absent. ``check_value`` may add a target-specific check (None when fine, else why not).
    """
    verdict = Verdict(pipe, target)
    gaps = gaps or {}
    for partition in sorted(set(expected) | set(seen)):
        want = expected.get(partition, [])
        by_seq = {e.seq: e for e in want}
        ranges = gaps.get(partition, [])

        def in_gap(offset: int, ranges: Sequence[tuple[int, int]] = ranges) -> bool:
            return any(a <= offset < b for a, b in ranges)

        counted: dict[int, int] = {}
        last_offset = -1
        for index, rec in enumerate(seen.get(partition, [])):
            verdict.found += 1
            ident = parse_key(rec.key)
            entry = by_seq.get(ident[1]) if ident is not None and ident[0] == pipe else None
            where = f"{target} partition {partition} index {index}"
            if entry is None:
                verdict.foreign += 1
                verdict.note(f"{where}: key {rec.key!r} was never produced into this partition")
                continue
            counted[entry.seq] = counted.get(entry.seq, 0) + 1
            if counted[entry.seq] > 1:
                verdict.duplicated += 1
                verdict.note(f"{where}: source offset {entry.offset} ({rec.key!r}) appears again")
                continue
            if entry.offset < last_offset:
                verdict.reordered += 1
                verdict.note(f"{where}: source offset {entry.offset} after {last_offset}")
            last_offset = max(last_offset, entry.offset)
            if in_gap(entry.offset):
                verdict.gap_present += 1
                verdict.note(f"{where}: source offset {entry.offset} is in a reported gap but arrived")
            why = _value_problem(entry, rec)
            if why is None and check_value is not None:
                why = check_value(entry, rec)
            if why is not None:
                verdict.corrupted += 1
                verdict.note(f"{where}: source offset {entry.offset}: {why}")
        for entry in want:
            if in_gap(entry.offset):
                verdict.gap_expected += 1
                continue
            verdict.expected += 1
            if entry.seq not in counted:
                verdict.lost += 1
                verdict.note(
                    f"{target} partition {partition}: source offset {entry.offset} ({pipe} {entry.seq}) missing"
                )
    return verdict


def _value_problem(entry: Entry, rec: Seen) -> str | None:
    if rec.size != entry.size:
        return f"size {rec.size}, produced {entry.size}"
    if rec.digest != entry.sha256:
        return "value differs from what was produced"
    headers = tuple(h for h in rec.headers if h[0] != POSITION_HEADER)
    if headers != record_headers(entry.seq):
        return f"headers {headers!r} differ from what was produced"
    return None


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
    listed: Iterable[str], referenced: set[str], prefix: str, topic: str, gaps: Mapping[int, Sequence[tuple[int, int]]]
) -> dict[str, list[str]]:
    """Objects no envelope points to, by reason.

    Object keys are the source coordinates (``{prefix}/{topic}/{partition}/{offset}``), so a retry
    rewrites the same object. The only expected orphans are objects uploaded for records whose
    transaction never committed and that were then deleted from the sources before being relayed
    again (the gap): the relay cannot write them again, and nothing deletes the object.
    """
    out: dict[str, list[str]] = {}
    pattern = re.compile(rf"^{re.escape(prefix)}/{re.escape(topic)}/(\d+)/(\d+)$")
    for key in sorted(set(listed) - referenced):
        match = pattern.match(key)
        if match is None:
            reason = "unexplained: a key the relay does not make"
        else:
            partition, offset = int(match.group(1)), int(match.group(2))
            if any(a <= offset < b for a, b in gaps.get(partition, [])):
                reason = "uploaded, transaction aborted (relay killed or stopped), record then deleted (gap)"
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
    if kind == "fenced":
        hit = [
            f"{w.kind} of {w.subject}"
            for w in windows
            if near(w)
            and (
                (w.kind in ("relay_pause", "relay_kill") and (w.subject == relay or role == "group"))
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
    """Fault spans from the fault log's begin/end events."""
    out: list[Window] = []
    open_: dict[tuple[str, str], float] = {}
    for ev in events:
        kind, phase = str(ev["kind"]), str(ev["phase"])
        subject = str(ev.get("relay") or ev.get("cluster") or ("s3" if kind == "s3_kill" else kind))
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
def scan(
    cluster: KafkaCluster,
    topic: str,
    partitions: int,
    on_record: Callable[[int, Any], None],
    timeout: float,
) -> None:
    """Every committed record of ``topic``, partition by partition in log order, handed to ``on_record``.

    Streams: nothing is kept here, so targets of many GiB can be read.
    """
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
        for partition in range(partitions):
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            for _ in range(10_000_000):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} on {cluster.name} took over {timeout:.0f}s")
                msgs = consumer.consume(500, 1.0)
                done = False
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done = True
                            continue
                        raise RuntimeError(f"reading {topic}/{partition} on {cluster.name}: {err.str()}")
                    on_record(partition, msg)
                if done:
                    break
            consumer.unassign()
    finally:
        consumer.close()


def seen_of(msg: Any, envelope_key: str | None = None, digest: str | None = None, size: int | None = None) -> Seen:
    """A :class:`Seen` from a consumed record (digest and size of its value unless given)."""
    value = msg.value()
    headers = tuple((k, v or b"") for k, v in (msg.headers() or []))
    return Seen(
        msg.key(),
        digest if digest is not None else sha256(value),
        size if size is not None else len(value or b""),
        headers,
        envelope_key,
    )


def dumps(data: Any) -> str:
    """JSON for the summary."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)
