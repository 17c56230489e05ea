"""What the chaos run produces, and the ledger that remembers it.

Every record is identified by its key, ``<pipe>-<seq>``; its value starts with the key and is
filled from a seeded random pool, so values are unique and cheap to make, and only their SHA-256
and size are remembered. Headers are a function of the sequence number, so the checker can
rebuild them. The ledger maps each delivered record to its source partition and offset (from the
producer's delivery report): that, not a re-read of the source, is the truth the targets are
checked against, because the nemesis deletes records from the sources.
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
GROUP_RELAY = "chaos-group"
"""The group instances' shared name."""

SMALL = KIB
LARGE_MIN = MIB + 1
LARGE_MAX = 8 * MIB
THRESHOLD = "1MiB"
TOPIC_CONFIG = {"max.message.bytes": str(16 * MIB)}

Headers = tuple[tuple[str, bytes], ...]


def record_key(pipe: str, seq: int) -> bytes:
    """The key of record ``seq`` of pipeline ``pipe``."""
    return f"{pipe}-{seq:010d}".encode()


def parse_key(key: bytes | None) -> tuple[str, int] | None:
    """``(pipe, seq)`` from a key made by :func:`record_key`, or None for anything else."""
    if key is None:
        return None
    pipe, sep, seq = key.decode("ascii", "replace").rpartition("-")
    if not sep or not seq.isdigit():
        return None
    return pipe, int(seq)


def record_headers(seq: int) -> Headers:
    """The headers of record ``seq``: a content type (so hydration adds none), a trace id, the sequence."""
    return (
        ("content-type", b"application/octet-stream"),
        ("traceparent", f"00-{seq:032x}-{seq % 2**64:016x}-01".encode()),
        ("chaos-seq", str(seq).encode()),
    )


class ValueMaker:
    """Values of any size from one seeded random pool: key first, then pool bytes from a seq-dependent place."""

    def __init__(self, seed: int, pool_size: int = LARGE_MAX + MIB) -> None:
        self._pool = random.Random(seed).randbytes(pool_size)

    def make(self, key: bytes, seq: int, size: int) -> bytes:
        """A ``size``-byte value starting with ``key``."""
        head = key + b":"
        room = size - len(head)
        start = (seq * 7919) % (len(self._pool) - room)
        return head + self._pool[start : start + room]


@dataclass
class Entry:
    """One produced record: where it landed and what its value hashes to."""

    seq: int
    partition: int
    size: int
    sha256: str
    offset: int = -1


@dataclass
class Ledger:
    """Every record one pipeline produced, by sequence number and by (partition, offset)."""

    pipe: str
    partitions: int
    entries: dict[int, Entry] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        """Delivered records per partition in offset order."""
        out: dict[int, list[Entry]] = {p: [] for p in range(self.partitions)}
        with self.lock:
            for entry in self.entries.values():
                if entry.offset >= 0:
                    out[entry.partition].append(entry)
        for entries in out.values():
            entries.sort(key=lambda e: e.offset)
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


def sha256(data: bytes | None) -> str:
    """Hex SHA-256 of ``data`` (of the empty string for None)."""
    return hashlib.sha256(data or b"").hexdigest()


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
