"""A transaction's plan: which records go to which target partition, and the entries it commits. No I/O.

The Kafka target turns each batch of runs it takes into plans (:func:`plan`): one per
transaction, so one for the batch, or, in group mode, one per source partition (each source
partition has a producer of its own). A plan is what the sender executes, and all it needs:

* ``chunks``: records as consumed, per target partition (``preserve`` and a fixed partition take a
  run whole; ``key`` hashes each key);
* ``made``: records built first (a transform's outputs, or ``Message`` objects): produced in the
  order they are made, which may wait for a transform's work; made once, kept for a retry;
* the entries of the positions topic it writes (:meth:`Plan.written`), and those it commits
  (:meth:`Plan.entries`), which also hold the map points its records made once their offsets are
  known: written by a later transaction (see :mod:`targets.kafka.positions`).

Every rule here is pure and unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from confluent_kafka import Message as KafkaMessage

from relay.message import Message, SourcePartition
from relay.run import Run
from relay.settings import TopicConfig
from relay.target import TargetError
from targets.kafka import positions
from targets.kafka.partitioner import target_partition
from targets.kafka.positions import Entry
from targets.kafka.transform import Transform

Where = tuple[str, int]
"""A target partition: (topic, partition)."""


class Chunk(NamedTuple):
    """Consumed records bound for one target partition, as the runs they came in (not copied), read from
    ``cluster`` (which names a record the target rejects)."""

    cluster: str
    topic: str
    partition: int
    runs: list[Sequence[KafkaMessage]]


class Placed(NamedTuple):
    """A made record and the target partition it goes to."""

    message: Message
    topic: str
    partition: int


class Made:
    """Records made from runs (transformed, or built as ``Message`` objects), once each, in order.

    Iterating makes them as it goes (a transform may wait for each); what was made is kept, so a
    second iteration (a retried transaction) gives the same records again, then makes the rest.
    Only the sender's thread iterates.
    """

    def __init__(self, source: Iterator[Placed]) -> None:
        self._source = source
        self._made: list[Placed] = []

    def __iter__(self) -> Iterator[Placed]:
        yield from self._made
        for placed in self._source:
            self._made.append(placed)
            yield placed


@dataclass(frozen=True)
class Plan:
    """One transaction. ``key`` names the producer (None: the one producer; group mode: the source
    partition); ``runs`` are acknowledged once it commits; ``moves`` is the next source offset of each
    source partition it moves; ``current`` the committed entries before it; ``extra`` entries to
    write alongside (positions imported at start-up); ``mirrors`` the target partition that mirrors
    a source partition (``partition: preserve``), whose offsets make the offset map; ``filled`` those
    mirrored source partitions it carries records of, whose map points wait for the offsets."""

    key: SourcePartition | None
    runs: tuple[Run, ...]
    chunks: tuple[Chunk, ...] = ()
    made: Made | None = None
    moves: Mapping[SourcePartition, int] = field(default_factory=dict)
    current: Mapping[SourcePartition, Entry] = field(default_factory=dict)
    extra: Mapping[SourcePartition, Entry] = field(default_factory=dict)
    mirrors: Mapping[SourcePartition, Where] = field(default_factory=dict)
    filled: frozenset[SourcePartition] = frozenset()

    @property
    def records(self) -> int:
        """How many records the plan holds."""
        return sum(len(run) for run in self.runs)

    @property
    def empty(self) -> bool:
        """Nothing to commit: no record, no position moved, no entry to write."""
        return not self.moves and not self.extra and not self.records

    def written(self) -> dict[SourcePartition, Entry]:
        """The entries this plan writes, before its records' offsets are known: those it fills move
        without their map point.

        Raises :class:`~targets.kafka.positions.PositionError` for an entry that would move back.
        """
        advanced = positions.advance(self.current, self.moves, self.mirrors.get, {}, self.filled)
        return {**self.extra, **advanced}

    def entries(self, offsets: Mapping[Where, int]) -> dict[SourcePartition, Entry]:
        """The entries this plan commits, given the offset the last record of each target partition got:
        as :meth:`written`, with the map points.

        Raises :class:`~targets.kafka.positions.PositionError` for an entry that would move back.
        """
        advanced = positions.advance(self.current, self.moves, self.mirrors.get, offsets)
        return {**self.extra, **advanced}


class Committed(NamedTuple):
    """What a committed plan wrote to the positions topic, and the entries it made true (with the map
    points of its records, which a later transaction writes)."""

    written: dict[SourcePartition, Entry]
    entries: dict[SourcePartition, Entry]


@dataclass(frozen=True)
class Planning:
    """What :func:`plan` needs besides the runs: the routes, the target topics' partition counts (read
    when a plan is made: a target topic may grow), the transform, whether every record is built as a
    ``Message`` first, whether each source partition has a producer of its own (group mode), and the
    target cluster's name (for errors)."""

    routes: Mapping[str, TopicConfig]
    partitions: Mapping[str, int]
    transform: Transform | None = None
    build_messages: bool = False
    per_partition: bool = False
    cluster: str = ""


def plan(
    runs: Sequence[Run],
    current: Mapping[SourcePartition, Entry],
    unwritten: Mapping[SourcePartition, Entry],
    how: Planning,
) -> list[Plan]:
    """The plans of a batch of ``runs``, given the committed entries and those not written yet.

    Raises :class:`~relay.target.TargetError` if a run starts below its partition's committed
    position: those records are committed already, and committing them again would duplicate them.
    """
    _refuse_reread(runs, current, how.cluster)
    if not how.per_partition:
        return [_one(None, list(runs), current, dict(unwritten), how)]
    by_key: dict[SourcePartition, list[Run]] = {}
    for run in runs:
        by_key.setdefault(run.source, []).append(run)
    for sp in unwritten:
        by_key.setdefault(sp, [])
    return [
        _one(sp, group, current, {sp: unwritten[sp]} if sp in unwritten else {}, how) for sp, group in by_key.items()
    ]


def _one(
    key: SourcePartition | None,
    runs: list[Run],
    current: Mapping[SourcePartition, Entry],
    extra: Mapping[SourcePartition, Entry],
    how: Planning,
) -> Plan:
    moves: dict[SourcePartition, int] = {}
    for run in runs:
        if run.next > moves.get(run.source, -1):
            moves[run.source] = run.next
    # A position the committed entry has reached already (progress overtaken by a commit) moves nothing.
    moves = {sp: nxt for sp, nxt in moves.items() if sp not in current or nxt > current[sp].next}
    routes = how.routes
    mirrors = {sp: (routes[sp.topic].target, sp.partition) for sp in moves if routes[sp.topic].partition == "preserve"}
    with_records = [run for run in runs if run.records]
    filled = frozenset(run.source for run in with_records if run.source in mirrors)
    if how.transform is not None or how.build_messages or any(run.is_built for run in with_records):
        made = Made(_made(with_records, how)) if with_records else None
        return Plan(key, tuple(runs), (), made, moves, current, extra, mirrors, filled)
    return Plan(key, tuple(runs), _chunks(with_records, how), None, moves, current, extra, mirrors, filled)


def _chunks(runs: Sequence[Run], how: Planning) -> tuple[Chunk, ...]:
    """Consumed records per target partition (the route's topic), in source order per source partition."""
    chunks: dict[Where, Chunk] = {}
    for run in runs:
        route = how.routes[run.source.topic]
        topic, mode = route.target, route.partition
        if mode == "key":
            count = how.partitions[topic]
            split: dict[int, list[KafkaMessage]] = {}
            for rec in run.records:
                p = target_partition("key", rec.key(), run.source.partition, count)
                split.setdefault(p, []).append(rec)
            for p, recs in split.items():
                chunks.setdefault((topic, p), Chunk(run.cluster, topic, p, [])).runs.append(recs)
            continue
        p = run.source.partition if mode == "preserve" else mode
        chunks.setdefault((topic, p), Chunk(run.cluster, topic, p, [])).runs.append(run.records)
    return tuple(chunks.values())


def _made(runs: Sequence[Run], how: Planning) -> Iterator[Placed]:
    """Each run's records as made (by the transform, or built as ``Message`` objects), placed."""
    routes, counts, transform = how.routes, how.partitions, how.transform
    for run in runs:
        route = routes[run.source.topic]
        made: Iterable[Message] = transform.outputs(run) if transform is not None else run.messages()
        for msg in made:
            topic = msg.topic
            if topic == route.target:
                partition = target_partition(route.partition, msg.key, msg.source_partition, counts[topic])
            else:  # an extra topic (a dead letter): the source partition, within its count
                partition = msg.source_partition % counts[topic]
            yield Placed(msg, topic, partition)


def _refuse_reread(runs: Sequence[Run], current: Mapping[SourcePartition, Entry], cluster: str) -> None:
    """Raise :class:`TargetError` if a run holds records below its partition's committed position.

    After a failover to a standby that trailed, a reader that went back to the standby's end would
    read records the target committed already; committing them again would duplicate them and
    write a position that moved back, which no relay could read.
    """
    for run in runs:
        entry = current.get(run.source)
        first = run.first_offset()
        if entry is not None and first is not None and first < entry.next:
            raise TargetError(
                f"target {cluster}: {run.source.topic}/{run.source.partition}: records from offset {first} were read "
                f"again below "
                f"the committed position {entry.next} (a source that trails the relay?); refusing to commit them twice"
            )
