"""What the chaos run produces, and the ledger that remembers it.

Every record carries its identity in the ``chaos-seq`` header (``<pipe>-<seq>``): keys may be
null or empty and values may be tombstones, so neither can identify a record. Each record has a
*shape* (:data:`SHAPES`): whether its key is the identity, null or empty, whether its value is
data, null (a tombstone) or empty, and which of the header sets of :func:`record_headers` it
carries (duplicate names, null-valued headers, none but the identity). The ledger keeps, per
record, its shape, its partition, its timestamp, the size and SHA-256 of its value (None for a
tombstone), and, from the producer's delivery report, its offset and the generation of the
source topic (bumped when the topic is deleted and created again). Key and headers are a pure
function of (pipe, seq, shape), :func:`record_fields`, which is what the producer sent: the
checker rebuilds them exactly instead of keeping millions of tuples. The ledger, not a re-read of
the source, is the truth the targets are checked against, because the nemeses delete records
from the sources and even whole topics.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

KIB = 1024
MIB = 1024 * KIB

MIRROR = "mirror"
"""Source topic of the failover pipeline (on east and west); also its envelope topic on ``dr``."""
HYDRATED = "hydrated"
"""The envelope topic hydrated back, on ``plain``."""
ORDERS = "orders"
"""Source topic of the group pipeline (on east) and its target topic (on ``plain``)."""

MIRROR_RELAY = "chaos-mirror"
"""The mirror relay's name (its key prefix in the positions topic)."""
HYDRATE_RELAY = "chaos-hydrate"
"""The hydrator's name."""
GROUP_RELAY = "chaos-group"
"""The group instances' shared name."""

SMALL = KIB
LARGE_MIN = MIB + 1
LARGE_MAX = 8 * MIB
THRESHOLD = "1MiB"
TOPIC_CONFIG = {"max.message.bytes": str(16 * MIB)}
FUTURE_LIMIT_MS = 3 * 3600 * 1000
"""``message.timestamp.after.max.ms`` of the source topics when records may be stamped up to 2 h ahead."""

ID_HEADER = "chaos-seq"
"""The header that names a record (``<pipe>-<seq>``): the one field every shape keeps."""

Header = tuple[str, bytes | None]
Headers = tuple[Header, ...]


@dataclass(frozen=True)
class Shape:
    """Which variant of each field a record has."""

    key: str  # "id" (the record's identity) | "null" | "empty"
    value: str  # "data" | "null" (a tombstone) | "empty"
    headers: str  # a kind of record_headers

    @property
    def typed(self) -> bool:
        """Whether the headers carry a ``content-type`` (hydration adds one where there is none)."""
        return self.headers in TYPED_HEADERS


TYPED_HEADERS = frozenset({"standard", "duplicate", "null"})
SHAPES: tuple[Shape, ...] = (
    Shape("id", "data", "standard"),  # most records: shape 0
    Shape("null", "data", "standard"),
    Shape("empty", "data", "standard"),
    Shape("id", "null", "standard"),
    Shape("id", "empty", "standard"),
    Shape("null", "null", "bare"),
    Shape("id", "data", "duplicate"),
    Shape("id", "data", "null"),
    Shape("empty", "empty", "duplicate"),
    Shape("id", "data", "untyped"),
    Shape("null", "data", "bare"),
)
PLAIN_SHARE = 0.7
"""Share of records of shape 0; the others are spread evenly over the other shapes."""


def record_key(pipe: str, seq: int) -> bytes:
    """The identity of record ``seq`` of pipeline ``pipe`` (its ``chaos-seq`` header, and the key of shape "id")."""
    return f"{pipe}-{seq:010d}".encode()


def parse_key(key: bytes | None) -> tuple[str, int] | None:
    """``(pipe, seq)`` from an identity made by :func:`record_key`, or None for anything else."""
    if key is None:
        return None
    pipe, sep, seq = key.decode("ascii", "replace").rpartition("-")
    if not sep or not seq.isdigit():
        return None
    return pipe, int(seq)


def identity(headers: Headers) -> tuple[str, int] | None:
    """``(pipe, seq)`` from a record's first ``chaos-seq`` header, or None if it has none."""
    for name, value in headers:
        if name == ID_HEADER:
            return parse_key(value)
    return None


def record_headers(pipe: str, seq: int, kind: str = "standard") -> Headers:
    """The headers of record ``seq`` for one kind of header set; every kind carries the identity.

    standard: content type, trace id, identity. bare: the identity only. duplicate: the same
    name three times (two values equal), and a second content type. null: a null-valued and an
    empty-valued header. untyped: no content type.
    """
    ident = record_key(pipe, seq)
    trace = f"00-{seq:032x}-{seq % 2**64:016x}-01".encode()
    if kind == "standard":
        return (("content-type", b"application/octet-stream"), ("traceparent", trace), (ID_HEADER, ident))
    if kind == "bare":
        return ((ID_HEADER, ident),)
    if kind == "duplicate":
        return (
            ("content-type", b"application/octet-stream"),
            ("tag", b"a"),
            (ID_HEADER, ident),
            ("tag", b"b"),
            ("tag", b"a"),
            ("content-type", b"text/plain"),
        )
    if kind == "null":
        return (("content-type", b"application/json"), (ID_HEADER, ident), ("nothing", None), ("empty", b""))
    if kind == "untyped":
        return (("traceparent", trace), (ID_HEADER, ident))
    raise ValueError(f"unknown header kind {kind!r}")


def record_fields(pipe: str, seq: int, shape: int) -> tuple[bytes | None, Headers]:
    """The key and headers record ``seq`` of shape ``shape`` was produced with."""
    s = SHAPES[shape]
    key = {"id": record_key(pipe, seq), "null": None, "empty": b""}[s.key]
    return key, record_headers(pipe, seq, s.headers)


def pick_shape(rng: random.Random, large: bool, untyped_large: bool) -> int:
    """A shape for the next record: a large one keeps a value (and a content type unless ``untyped_large``)."""
    if rng.random() < PLAIN_SHARE:
        return 0
    allowed = [
        i for i, s in enumerate(SHAPES) if i and (not large or (s.value == "data" and (s.typed or untyped_large)))
    ]
    return rng.choice(allowed)


class ValueMaker:
    """Values of any size from one seeded random pool: identity first, then pool bytes from a seq-dependent place."""

    def __init__(self, seed: int, pool_size: int = LARGE_MAX + MIB) -> None:
        self._pool = random.Random(seed).randbytes(pool_size)

    def make(self, ident: bytes, seq: int, size: int) -> bytes:
        """A ``size``-byte value starting with ``ident``."""
        head = ident + b":"
        room = size - len(head)
        start = (seq * 7919) % (len(self._pool) - room)
        return head + self._pool[start : start + room]

    def value(self, pipe: str, seq: int, shape: int, size: int) -> bytes | None:
        """The value record ``seq`` of shape ``shape`` was produced with."""
        kind = SHAPES[shape].value
        if kind == "null":
            return None
        if kind == "empty":
            return b""
        return self.make(record_key(pipe, seq), seq, size)


@dataclass(slots=True)
class Entry:
    """One produced record: its fields (key and headers by shape), and where it landed."""

    seq: int
    partition: int
    size: int
    sha256: str | None  # of the value; None for a null value (a tombstone)
    offset: int = -1
    timestamp: int = 0  # ms, as produced (CreateTime)
    shape: int = 0
    generation: int = 0  # of the source topic the record landed in

    @property
    def position(self) -> tuple[int, int]:
        """Its place in the source partition's history: (generation, offset)."""
        return self.generation, self.offset


@dataclass
class Ledger:
    """Every record one pipeline produced, by sequence number, and the source topic's current shape.

    ``partitions`` grows when the operations nemesis adds partitions; ``generation`` grows when it
    deletes and creates the topic again (``recreated_ms``: when, by the wall clock). ``topology``
    is held by whatever changes the topic or deletes records from it, so that none of them acts
    on a topic that is being changed.
    """

    pipe: str
    partitions: int
    entries: dict[int, Entry] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    generation: int = 0
    recreated_ms: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    topology: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def add(self, entry: Entry) -> None:
        """Remember a record handed to the producer (its offset comes with the delivery report)."""
        with self.lock:
            self.entries[entry.seq] = entry

    def delivered(self, seq: int, offset: int) -> None:
        """The broker acknowledged ``seq`` at ``offset``."""
        with self.lock:
            self.entries[seq].offset = offset

    def fail(self, seq: int, why: str) -> None:
        """The producer gave up on ``seq``."""
        with self.lock:
            self.failed.append(f"{self.pipe} seq {seq}: {why}")

    def by_partition(self) -> dict[int, list[Entry]]:
        """Delivered records per partition in the order of the partition's history (generation, offset)."""
        out: dict[int, list[Entry]] = {p: [] for p in range(self.partitions)}
        with self.lock:
            for entry in self.entries.values():
                if entry.offset >= 0:
                    out.setdefault(entry.partition, []).append(entry)
        for entries in out.values():
            entries.sort(key=lambda e: (e.generation, e.offset))
        return out

    def undelivered(self) -> int:
        """Records handed to the producer that have no delivery report (yet)."""
        with self.lock:
            return sum(1 for e in self.entries.values() if e.offset < 0)

    def totals(self) -> tuple[int, int]:
        """(records, value bytes) delivered."""
        with self.lock:
            done = [e for e in self.entries.values() if e.offset >= 0]
        return len(done), sum(e.size for e in done)


def sha256(data: bytes | None) -> str | None:
    """Hex SHA-256 of ``data``; None for None (a null value is not an empty one)."""
    return None if data is None else hashlib.sha256(data).hexdigest()


CLIENT_LOG = logging.getLogger("chaos.clients")
"""The harness's own Kafka clients log here (to ``clients.log`` of the run), not to the terminal."""
CLIENT_LOG.propagate = False


class _HasClientConfig(Protocol):
    def client_config(self) -> dict[str, str]: ...


def _ignore(_err: Any) -> None:
    """Connection errors while a broker is down are expected; results and delivery reports tell what matters."""


def client_conf(cluster: _HasClientConfig) -> dict[str, Any]:
    """Client properties for one of the harness's own clients of ``cluster``."""
    return {**cluster.client_config(), "logger": CLIENT_LOG, "error_cb": _ignore}
