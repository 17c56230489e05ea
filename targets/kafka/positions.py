"""Resume positions in a compacted topic on the target cluster, written in the same transaction as the records.

As Kafka Connect's exactly-once source connectors (KIP-618) and MirrorMaker 2 keep theirs: every
transaction the Kafka target commits also writes, for each source partition it carries records
of, one record to the positions topic (``target.positions_topic``, by default the relay's name +
``-positions``, see :func:`default_topic`; ``cleanup.policy=compact``). Its key names the relay and the source
partition, ``<relay name>/<source topic>/<partition>``; its value is an :class:`Entry`: the next
source offset to read and, under ``partition: preserve``, the offset map (next source offset ->
next target offset) that consumer groups are translated with. Because the entry commits or
aborts with the records it describes, the newest committed entry per key is exactly the resume
point; data records carry no header the relay trusts, so other writers, retention and compaction
of the data topics cannot move or lose a position.

A transaction's map point (where its records landed on the target) is known only once the target
has acknowledged them. Waiting for that inside the transaction would cost a round trip each, so
the entry a transaction writes moves the position with the map as it was, and its own point is
written by the next transaction, or by one of its own once none has followed for a second
(:mod:`targets.kafka.accumulator`). The position is never late: a relay killed in between loses
that one point, and a consumer group translated there re-reads at most that transaction's records.

Reading back (:meth:`PositionsTopic.read`) uses ``read_committed`` and goes up to the topic's
high watermark as it was when reading started, waiting for transactions still open then to
finish (an open transaction holds back what a ``read_committed`` consumer sees, so stopping at
the first end-of-partition could miss a committed entry written after it).

Wire format of a value (JSON): ``{"v": 1, "next": 1234, "map": [[1000, 980], [1234, 1214]], "w": "dr",
"src": {"east": "<topic id>"}, "tid": "<topic id>", "since": 1000}``; ``map`` is left out when empty, and
``w`` (the writer's transactional id), ``src`` (the source topic's Kafka topic id per source cluster),
``tid`` (the target topic's) and ``since`` (where a new offset map began after the target topic was
recreated) when unknown: entries written before they existed are read and trusted as they are, and a
relay of that version reads these entries too (it ignores the fields it does not know). A value this
version cannot read stops the relay with a line naming the record: guessing a position would lose or
duplicate records.

The map stays bounded (:func:`thin`): the newest :data:`DENSE` points are all kept; behind them
the gap between two kept points is at most the distance (in source offsets) of the newer one from
the newest point, and the oldest point is always kept. A consumer group L records behind the
newest point therefore re-reads at most L records (or one transaction's records, if that is
more), exactly nothing at a boundary of the last :data:`DENSE` transactions, and the map holds
about two points per doubling of the distance it covers (37 after 60,000 transactions; never
more than ``DENSE + 121``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from relay.backoff import backoff_delay
from relay.errors import passing
from relay.kafkautil import list_offsets, retriable
from relay.logs import librdkafka_logger
from relay.message import SourcePartition
from relay.settings import ClusterConfig
from relay.target import TargetError

log = structlog.get_logger("kafka_lfs_relay.target")

TOPIC_SUFFIX: Final = "-positions"


def default_topic(name: str) -> str:
    """The positions topic of the relay called ``name`` unless configured: its name + ``-positions``.

    One topic per relay name: a relay that died inside a transaction holds back what a
    ``read_committed`` reader of its positions topic sees until that transaction is aborted, which
    its own restart (or, in group mode, the partition's new owner) does at once; another relay's
    start-up would have to wait for the transaction timeout.
    """
    return f"{name}{TOPIC_SUFFIX}"


VERSION: Final = 1
MAX_OFFSET: Final = 2**63 - 1
DENSE: Final = 16
"""The newest map points, all kept (see :func:`thin`)."""

TOPIC_CONFIG: Final = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"}
"""How the relay creates the positions topic: compacted, segments rolled hourly so that compaction
can keep its size near one record per key."""

Point = tuple[int, int]
"""(next source offset, next target offset): every record before the first is before the second."""


class PositionError(ValueError):
    """A positions record this version cannot read; the message says what is wrong with it."""


@dataclass(frozen=True)
class Entry:
    """One source partition's position: the next offset to read (-1: from the beginning) and its offset map.

    ``writer`` is the transactional id of the relay that wrote it; ``source_ids`` the Kafka topic id of
    the source topic on each source cluster it was read from (cluster name, id); ``target_id`` that of
    the target topic; ``since`` the source offset from which the target topic holds this relay's
    records, when that is not the beginning (the target topic was recreated there). An entry written
    before these were kept has none of them, and is trusted as it is.
    """

    next: int
    map: tuple[Point, ...] = ()
    writer: str | None = None
    source_ids: tuple[tuple[str, str], ...] = ()
    target_id: str | None = None
    since: int | None = None

    def source_id(self, cluster: str) -> str | None:
        """The source topic's id on ``cluster`` when this entry was written, if known."""
        return dict(self.source_ids).get(cluster)

    def advanced(self, next_offset: int, target_next: int | None) -> Entry:
        """This entry moved to ``next_offset``, with a map point when the next target offset is known.

        Raises :class:`PositionError` if ``next_offset`` is behind this entry: records already committed
        were read again, and the entry would be one that :func:`decode` refuses (the map must grow),
        so that no relay could start from the positions topic again. A target offset below the
        newest point's means the target partition was recreated (or truncated) under the relay: the
        map starts again there (see :attr:`since`), since its old points no longer describe that log.
        """
        if next_offset < self.next:
            raise PositionError(f"the position would move back from {self.next} to {next_offset}")
        if next_offset == self.next and next_offset >= 0:
            return self  # nothing new: a second point at the same source offset would not grow
        if target_next is None:
            target_next = self.map[-1][1] if self.map else None
        if target_next is None:
            return replace(self, next=next_offset)
        if self.map and target_next < self.map[-1][1]:
            return replace(self, next=next_offset, map=((next_offset, target_next),), target_id=None, since=next_offset)
        return replace(self, next=next_offset, map=thin((*self.map, (next_offset, target_next))))

    def moved(self, next_offset: int) -> Entry:
        """This entry moved to ``next_offset`` with no new map point (its point is written later, see
        :func:`advance`). Raises :class:`PositionError` as :meth:`advanced` does."""
        if next_offset < self.next:
            raise PositionError(f"the position would move back from {self.next} to {next_offset}")
        return self if next_offset == self.next else replace(self, next=next_offset)


def map_restarted(before: Entry | None, after: Entry) -> bool:
    """Whether ``after`` started a new offset map where ``before`` had one (the target partition went back)."""
    return before is not None and bool(before.map) and after.since is not None and after.since != before.since


def advance(
    current: Mapping[SourcePartition, Entry],
    batch_next: Mapping[SourcePartition, int],
    mirror: Callable[[SourcePartition], tuple[str, int] | None],
    offsets: Mapping[tuple[str, int], int],
    later: Collection[SourcePartition] = (),
) -> dict[SourcePartition, Entry]:
    """The entries after a transaction that moves each source partition to ``batch_next``.

    ``mirror`` names the target partition that mirrors a source partition (``partition:
    preserve``), or None (no offset map); ``offsets`` holds the offset the transaction's last
    record in each target partition got. A source partition in ``later`` moves without a map
    point: its records' target offsets are not known yet. Raises :class:`PositionError` for an
    entry that would move back (see :meth:`Entry.advanced`).
    """
    out: dict[SourcePartition, Entry] = {}
    for sp, next_offset in batch_next.items():
        where = mirror(sp)
        last = offsets.get(where) if where is not None else None
        entry = current.get(sp, Entry(-1))
        try:
            if where and sp in later:
                out[sp] = entry.moved(next_offset)
            elif where:
                out[sp] = entry.advanced(next_offset, None if last is None else last + 1)
            else:
                out[sp] = replace(entry, next=next_offset, map=())
        except PositionError as exc:
            raise PositionError(f"{sp.topic}/{sp.partition}: {exc}") from None
    return out


def key(name: str, sp: SourcePartition) -> bytes:
    """The record key of ``sp``'s entry for the relay called ``name``."""
    return f"{name}/{sp.topic}/{sp.partition}".encode()


def parse_key(raw: bytes) -> tuple[str, SourcePartition] | None:
    """(relay name, source partition) of a positions record key, or None for a key of another shape."""
    try:
        name, topic, partition = raw.decode("utf-8").rsplit("/", 2)
        return name, SourcePartition(topic, int(partition))
    except (UnicodeDecodeError, ValueError):
        return None


def encode(entry: Entry, writer: str | None = None) -> bytes:
    """The record value of ``entry``, naming ``writer`` (default: the entry's own)."""
    body: dict[str, Any] = {"v": VERSION, "next": entry.next}
    if entry.map:
        body["map"] = [list(p) for p in entry.map]
    writer = writer or entry.writer
    if writer:
        body["w"] = writer
    if entry.source_ids:
        body["src"] = dict(entry.source_ids)
    if entry.target_id:
        body["tid"] = entry.target_id
    if entry.since is not None:
        body["since"] = entry.since
    return json.dumps(body, separators=(",", ":")).encode()


def _offset(value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_OFFSET:
        raise PositionError(f"{value!r} is not an offset")
    return value


def decode(raw: bytes) -> Entry:
    """The entry in a record value; raises :class:`PositionError` for anything this version did not write."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise PositionError("the value is not JSON") from None
    if not isinstance(body, dict):
        raise PositionError("the value is not a JSON object")
    if body.get("v") != VERSION:
        raise PositionError(f"unknown version {body.get('v')!r} (this relay writes {VERSION})")
    nxt = _offset(body.get("next"), -1)
    raw_map = body.get("map", [])
    if not isinstance(raw_map, list):
        raise PositionError("map is not a list")
    points: list[Point] = []
    for item in raw_map:
        if not isinstance(item, list) or len(item) != 2:
            raise PositionError("a map point is not a [source, target] pair")
        point = (_offset(item[0], 0), _offset(item[1], 0))
        if points and (point[0] <= points[-1][0] or point[1] < points[-1][1]):
            raise PositionError("map points do not grow")
        points.append(point)
    if points and points[-1][0] > nxt:
        raise PositionError("the map runs past the position")
    return Entry(nxt, tuple(points), *_identity(body))


def _identity(body: dict[str, Any]) -> tuple[str | None, tuple[tuple[str, str], ...], str | None, int | None]:
    """The writer, source topic ids, target topic id and map start of an entry (absent in older ones)."""
    writer, src, tid, since = body.get("w"), body.get("src", {}), body.get("tid"), body.get("since")
    if writer is not None and not isinstance(writer, str):
        raise PositionError("w (the writer) is not a string")
    if not isinstance(src, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in src.items()):
        raise PositionError("src is not an object of topic ids")
    if tid is not None and not isinstance(tid, str):
        raise PositionError("tid is not a topic id")
    return writer, tuple(sorted(src.items())), tid, None if since is None else _offset(since, 0)


def thin(points: Sequence[Point]) -> tuple[Point, ...]:
    """``points`` (oldest first) bounded: the newest :data:`DENSE` kept, older ones sparser with their distance.

    The distance of a point is the newest point's source offset minus its own. Walking from the
    newest to the oldest, a point is dropped when the next older one is within the distance of the
    last point kept from it; so the gap after a kept point q is at most ``max(distance(q), the gap
    there was)``, and the oldest point always stays. Distances more than double every two points
    kept, so at most ``DENSE + 121`` remain (offsets are below 2^63). Applied again, as every new
    transaction does, it keeps these guarantees: distances only grow.

    (Keeping one point per power-of-two distance, newest first, did not survive being applied
    again: a point entering a range replaced the one there before it could age into the next, so
    the map kept 17 points and a group more than 17 transactions behind re-read everything.)
    """
    if len(points) <= DENSE:
        return tuple(points)
    newest = points[-1][0]
    last_kept = points[-DENSE]
    older: list[Point] = []
    for i in range(len(points) - DENSE - 1, -1, -1):
        if i > 0 and last_kept[0] - points[i - 1][0] <= newest - last_kept[0]:
            continue  # the next older point is close enough to the last one kept
        last_kept = points[i]
        older.append(last_kept)
    return (*reversed(older), *points[-DENSE:])


def translate(points: Sequence[Point], committed: int) -> Point | None:
    """The newest point at or before source offset ``committed`` (rounded down, never past), or None."""
    found: Point | None = None
    for point in points:
        if point[0] > committed:
            break
        found = point
    return found


def reader_config(cluster: ClusterConfig) -> dict[str, Any]:
    """The librdkafka properties of the consumer that reads the positions topic back, without its logger."""
    return {
        **cluster.client_config(),
        "group.id": f"kafka-lfs-relay-positions-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
    }


class PositionsTopic:
    """The positions topic of one target cluster, seen by the relay called ``name``."""

    def __init__(self, cluster: ClusterConfig, topic: str, name: str, timeout: float) -> None:
        self.cluster = cluster
        self.topic = topic
        self.name = name
        self.timeout = timeout
        self.newest_ms = 0
        """When the newest entry of this relay that :meth:`read` found was written (ms since the epoch; 0: none)."""

    def read(self, wanted: Collection[SourcePartition] | None) -> dict[SourcePartition, Entry]:
        """The newest committed entry of each of ``wanted`` that has one (None: every entry of this relay).

        Raises :class:`TargetError` naming the record if an entry of this relay cannot be read.
        """
        ends = self._high_watermarks()
        found: dict[SourcePartition, Entry] = {}
        if not any(ends.values()):
            return found
        consumer = Consumer({**reader_config(self.cluster), "logger": librdkafka_logger()})
        todo = {p: end for p, end in ends.items() if end > 0}
        prefix = f"{self.name}/".encode()
        deadline = time.monotonic() + self.timeout
        waiting_logged = False
        try:
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in todo])
            while todo:
                if time.monotonic() > deadline:
                    raise passing(
                        TargetError(
                            f"target {self.cluster.name}: reading positions topic {self.topic!r} did not reach "
                            f"offset {max(todo.values())} within {self.timeout:.0f}s (a transaction stays open on it)"
                        )
                    )
                for msg in consumer.consume(5000, 0.5):
                    err = msg.error()
                    partition = msg.partition() or 0
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            error = TargetError(
                                f"target {self.cluster.name}: reading positions topic {self.topic!r}: {err.str()}"
                            )
                            raise passing(error) if retriable(err) else error
                        if partition in todo and (msg.offset() or 0) >= todo[partition]:
                            del todo[partition]
                        elif partition in todo and not waiting_logged:
                            waiting_logged = True
                            log.info("waiting for transactions still open on the positions topic", topic=self.topic)
                        continue
                    self._take(msg, prefix, wanted, found)
                    if partition in todo and (msg.offset() or 0) + 1 >= todo[partition]:
                        del todo[partition]
        finally:
            consumer.close()
        return found

    def _take(
        self,
        msg: Any,
        prefix: bytes,
        wanted: Collection[SourcePartition] | None,
        found: dict[SourcePartition, Entry],
    ) -> None:
        raw_key = msg.key()
        if not raw_key or not raw_key.startswith(prefix):
            return  # another relay's entry
        parsed = parse_key(raw_key)
        if parsed is None or parsed[0] != self.name or (wanted is not None and parsed[1] not in wanted):
            return
        sp = parsed[1]
        value = msg.value()
        self.newest_ms = max(self.newest_ms, msg.timestamp()[1])
        if value is None:  # a tombstone: the entry was deleted (by an operator resetting the relay)
            found.pop(sp, None)
            return
        try:
            found[sp] = decode(value)
        except PositionError as exc:
            raise TargetError(
                f"target {self.cluster.name}: positions topic {self.topic!r} record "
                f"{msg.partition()}@{msg.offset()} (relay {self.name!r}, {sp.topic}/{sp.partition}) cannot be read: "
                f"{exc}; refusing to guess a position"
            ) from None

    def _high_watermarks(self) -> dict[int, int]:
        """The positions topic's end offset per partition, read_uncommitted (what was written so far).

        Asked again while leadership settles: the topic may have been created a moment ago.
        """
        conf: dict[str, Any] = {**self.cluster.client_config(), "logger": librdkafka_logger()}
        admin = AdminClient(conf)
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return self._ask_high_watermarks(admin)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                attempt += 1
                if not retriable(err) or time.monotonic() > deadline:
                    error = TargetError(
                        f"target {self.cluster.name}: reading the end of positions topic {self.topic!r}: {err.str()}"
                    )
                    raise (passing(error) if retriable(err) else error) from None
                time.sleep(backoff_delay(0.1, 2.0, attempt))

    def _ask_high_watermarks(self, admin: AdminClient) -> dict[int, int]:
        md = admin.list_topics(self.topic, timeout=self.timeout)
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None:
            reason = tmd.error.str() if tmd is not None and tmd.error is not None else "it does not exist"
            raise TargetError(f"target {self.cluster.name}: positions topic {self.topic!r}: {reason}")
        latest: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        wanted = [(self.topic, p) for p in tmd.partitions]
        ends = list_offsets(admin, wanted, latest, IsolationLevel.READ_UNCOMMITTED, self.timeout)
        return {p: end for (_, p), end in ends.items()}


def records(
    name: str, entries: Mapping[SourcePartition, Entry], writer: str | None = None
) -> list[tuple[bytes, bytes]]:
    """The positions records (key, value) for ``entries``, naming ``writer`` (default: each entry's own)."""
    return [(key(name, sp), encode(entry, writer)) for sp, entry in entries.items()]
