"""Choosing a target partition: preserve the source's, a fixed one, or by key like the Java client."""

from __future__ import annotations

from relay.settings import PartitionMode


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (as in the Java client's ``Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length - (length % 4)
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the Java producer's default partitioner picks for a non-null ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def target_partition(mode: PartitionMode, key: bytes | None, source_partition: int, partitions: int) -> int:
    """The target partition of a record under ``mode``.

    A record without a key under ``key`` mode keeps its source partition (modulo the target's
    count), so the choice is deterministic and a retried batch lands where it landed before.
    """
    if mode == "preserve":
        return source_partition
    if mode == "key":
        if key is None:
            return source_partition % partitions
        return key_partition(key, partitions)
    return mode
