"""Resume positions stored in the target itself, as a header on the last record of each batch.

Every transaction the Kafka-writing targets commit puts, on its last record in each target
partition, the header ``kfr-pos``: the source topic and, for the source partitions that target
partition stands for, the next source offset to read. Because a transaction is atomic and
positions only grow, the element-wise maximum of the newest ``kfr-pos`` found in each target
partition is exactly the resume point: see :func:`merge`.

Wire format (ASCII): ``v1 <source-topic> <p>:<next>[,<p>:<next>...]``. Topic names cannot hold
spaces, so the format needs no escaping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from relay.message import SourcePartition

HEADER = "kfr-pos"
_VERSION = "v1"


class PositionFormatError(ValueError):
    """A ``kfr-pos`` header that this version cannot read."""


def encode(source_topic: str, positions: Mapping[int, int]) -> bytes:
    """The header value for ``positions`` (source partition -> next offset) of ``source_topic``."""
    body = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
    return f"{_VERSION} {source_topic} {body}".encode("ascii")


_FORMAT = re.compile(rb"v1 ([A-Za-z0-9._-]{1,249}) ((?:[0-9]{1,10}:[0-9]{1,19}(?:,[0-9]{1,10}:[0-9]{1,19})*)?)")


def decode(value: bytes) -> dict[SourcePartition, int]:
    """The positions in a header value; raises :class:`PositionFormatError` if it is malformed."""
    match = _FORMAT.fullmatch(value)
    if match is None:
        version = value.split(b" ", 1)[0]
        if version != _VERSION.encode() and re.fullmatch(rb"v[0-9]+", version):
            raise PositionFormatError(f"unknown {HEADER} version {version.decode()!r}")
        raise PositionFormatError(f"malformed {HEADER} header")
    topic = match.group(1).decode("ascii")
    out: dict[SourcePartition, int] = {}
    for item in match.group(2).split(b",") if match.group(2) else ():
        p, o = item.split(b":")
        sp = SourcePartition(topic, int(p))
        if sp in out:
            raise PositionFormatError(f"malformed {HEADER} header: partition {int(p)} appears twice")
        out[sp] = int(o)
    return out


def merge(found: Iterable[Mapping[SourcePartition, int]]) -> dict[SourcePartition, int]:
    """Element-wise maximum: the newest position of every source partition seen in any vector."""
    out: dict[SourcePartition, int] = {}
    for vector in found:
        for sp, offset in vector.items():
            if offset > out.get(sp, -1):
                out[sp] = offset
    return out
