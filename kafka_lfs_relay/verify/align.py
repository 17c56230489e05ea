"""Pairing a source range with its target range, record by record. Pure: no I/O.

Both sides arrive as :class:`Fingerprint` streams in log order. Within one segment (the records
between two points of the offset map, see :mod:`kafka_lfs_relay.verify.plan`) the relay wrote the
source's records in order, so the target is the source with records possibly left out (*missing*),
put in (*extra*: another producer's, or a duplicate) or changed (*different*). :func:`align` walks
both streams with a look-ahead window of ``window`` records on each side and decides each head pair:

* equal: a match;
* the source record appears further on in the target window, the target record nowhere in the
  source window: the target record is extra;
* the reverse: the source record is missing;
* neither appears: the pair is one record, changed (the fields that differ are named);
* both appear (records reordered): the nearer one decides.

Memory is the two windows of fingerprints: digests, never payloads (in digest mode; otherwise the
window also keeps the raw values, to say where two values first differ).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple

DEFAULT_WINDOW: Final = 10_000


class Fingerprint(NamedTuple):
    """One record as verify compares it: digests of its key and headers, its value's identity, its timestamp.

    ``value`` is the identity of what the value stands for (the payload's SHA-256 for an envelope,
    see :mod:`kafka_lfs_relay.verify.values`); ``note`` says why a value could not be established (a
    missing or altered object); ``raw`` keeps the value outside digest mode. A tuple: one is made
    for every record read, twice per record compared.
    """

    offset: int
    key: bytes | None
    value: object
    headers: bytes
    timestamp: int
    note: str | None = None
    raw: bytes | None = None

    @property
    def whole(self) -> tuple[object, ...]:
        """Everything compared, as one hashable value."""
        return self[1:5]


def differing_fields(source: Fingerprint, target: Fingerprint) -> list[str]:
    """The names of the fields in which two fingerprints differ, in a stable order."""
    names = [
        name
        for name, a, b in (
            ("key", source.key, target.key),
            ("value", source.value, target.value),
            ("headers", source.headers, target.headers),
            ("timestamp", source.timestamp, target.timestamp),
        )
        if a != b
    ]
    return names


def first_difference(a: bytes | None, b: bytes | None) -> str:
    """Where two raw values first differ, without showing either: lengths and the first differing byte."""
    if a is None or b is None:
        return "null on one side"
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"{len(a)} vs {len(b)} bytes, first differing at byte {at}"


@dataclass
class Tally:
    """What one partition's comparison found: counts, and the first offset of each kind of difference."""

    compared: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    before: int = 0
    """Target records ahead of the first relayed record in the first segment: older than the mirror."""
    first_missing: int | None = None
    first_extra: int | None = None
    first_different: tuple[int, int, str] | None = None
    """(source offset, target offset, what differs)."""
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Whether nothing was missing, extra or different."""
        return not (self.missing or self.extra or self.different)

    def add(self, other: Tally) -> None:
        """Fold another segment's tally into this one (first offsets: the earlier tally's win)."""
        self.compared += other.compared
        self.missing += other.missing
        self.extra += other.extra
        self.different += other.different
        self.before += other.before
        self.first_missing = self.first_missing if self.first_missing is not None else other.first_missing
        self.first_extra = self.first_extra if self.first_extra is not None else other.first_extra
        self.first_different = self.first_different or other.first_different
        self.notes += [n for n in other.notes if n not in self.notes][: max(0, 5 - len(self.notes))]


class _Window:
    """A look-ahead window over one side's stream, with a count of each fingerprint in it."""

    def __init__(self, stream: Iterator[Fingerprint], size: int) -> None:
        self.stream = stream
        self.size = size
        self.items: deque[Fingerprint] = deque()
        self.wholes: deque[tuple[object, ...]] = deque()
        self.counts: Counter[tuple[object, ...]] = Counter()
        self.done = False

    def fill(self) -> None:
        items, wholes, counts = self.items, self.wholes, self.counts
        while not self.done and len(items) < self.size:
            item = next(self.stream, None)
            if item is None:
                self.done = True
                return
            whole = item[1:5]
            items.append(item)
            wholes.append(whole)
            counts[whole] += 1

    def head(self) -> tuple[object, ...]:
        return self.wholes[0]

    def pop(self) -> Fingerprint:
        whole = self.wholes.popleft()
        left = self.counts[whole] - 1
        if left:
            self.counts[whole] = left
        else:
            del self.counts[whole]
        return self.items.popleft()

    def has(self, whole: tuple[object, ...]) -> bool:
        return whole in self.counts

    def distance(self, whole: tuple[object, ...]) -> int:
        return self.wholes.index(whole)


def align(
    source: Iterable[Fingerprint], target: Iterable[Fingerprint], window: int = DEFAULT_WINDOW, head: bool = False
) -> Tally:
    """Pair ``source`` with ``target`` (one segment) and count what differs; see the module docstring.

    ``head``: this is the first segment of the range, begun at the log starts, which may hold target
    records older than the mirror: until the first match, a target record that is not the source's
    next one is counted as ``before`` (older than the mirror), not as extra or different.
    """
    tally = Tally()
    src, tgt = _Window(iter(source), window), _Window(iter(target), window)
    matched = not head
    while True:
        src.fill()
        tgt.fill()
        if not src.items and not tgt.items:
            return tally
        if not tgt.items:
            _missing(tally, src.pop())
            continue
        if src.items and src.head() == tgt.head():
            src.pop(), tgt.pop()
            tally.compared += 1
            matched = True
            continue
        decision = _decide(src, tgt) if src.items else "extra"
        if decision == "missing":
            _missing(tally, src.pop())
        elif not matched:
            tgt.pop()
            tally.before += 1
        elif decision == "extra":
            _extra(tally, tgt.pop())
        else:
            _different(tally, src.pop(), tgt.pop())


def _decide(src: _Window, tgt: _Window) -> str:
    """For two unequal head records: ``extra`` (the target's), ``missing`` (the source's) or ``different``."""
    s, t = src.head(), tgt.head()
    s_ahead, t_ahead = tgt.has(s), src.has(t)
    if s_ahead and t_ahead:  # reordered: the nearer one decides
        return "extra" if tgt.distance(s) <= src.distance(t) else "missing"
    if s_ahead:
        return "extra"
    if t_ahead:
        return "missing"
    return "different"


def _missing(tally: Tally, s: Fingerprint) -> None:
    tally.missing += 1
    if tally.first_missing is None:
        tally.first_missing = s.offset


def _extra(tally: Tally, t: Fingerprint) -> None:
    tally.extra += 1
    if tally.first_extra is None:
        tally.first_extra = t.offset


def _different(tally: Tally, s: Fingerprint, t: Fingerprint) -> None:
    tally.compared += 1
    tally.different += 1
    fields = differing_fields(s, t)
    what = ", ".join(fields)
    if "value" in fields:
        if t.note or s.note:
            what += f" ({t.note or s.note})"
        elif s.raw is not None or t.raw is not None:
            what += f" ({first_difference(s.raw, t.raw)})"
    if tally.first_different is None:
        tally.first_different = (s.offset, t.offset, what)
