"""Unit tests of targets.kafka.partitioner: Kafka's murmur2 and the choice of a target partition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from targets.kafka.partitioner import key_partition, murmur2, target_partition


def _int32(x: int) -> int:
    """``x`` wrapped to a Java ``int`` (two's complement, 32 bits)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _java_murmur2(data: bytes) -> int:
    """An independent, line-by-line transcription of Java's ``Utils.murmur2`` with ``int`` overflow."""
    length = len(data)
    seed = _int32(0x9747B28C)
    m = 0x5BD1E995
    r = 24
    h = _int32(seed ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = _int32(data[i4] + (data[i4 + 1] << 8) + (data[i4 + 2] << 16) + (data[i4 + 3] << 24))
        k = _int32(k * m)
        k = _int32(k ^ ((k & 0xFFFFFFFF) >> r))  # k ^= k >>> r
        k = _int32(k * m)
        h = _int32(h * m)
        h = _int32(h ^ k)
    tail = length & ~3
    rest = length % 4
    # Java's switch falls through from case 3 to case 1.
    if rest == 3:
        h = _int32(h ^ (data[tail + 2] << 16))
    if rest >= 2:
        h = _int32(h ^ (data[tail + 1] << 8))
    if rest >= 1:
        h = _int32(h ^ data[tail])
        h = _int32(h * m)
    h = _int32(h ^ ((h & 0xFFFFFFFF) >> 13))
    h = _int32(h * m)
    h = _int32(h ^ ((h & 0xFFFFFFFF) >> 15))
    return h


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Kafka's clients UtilsTest.testMurmur2.
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
        # Vectors other Kafka-compatible implementations test against (every tail length 1..4 and 5).
        (b"1", -1993445489),
        (b"12", 126087238),
        (b"123", -267702483),
        (b"1234", -1614185708),
        (b"12345", -1188365604),
    ],
)
def test_murmur2_matches_kafka_java_vectors(data: bytes, expected: int) -> None:
    """murmur2 gives the same signed 32-bit value as Kafka's Java Utils.murmur2 for known inputs."""
    assert murmur2(data) == expected


@given(st.binary(max_size=64))
def test_murmur2_matches_java_transcription(data: bytes) -> None:
    """murmur2 agrees with an independent Java-int transcription of Utils.murmur2 on arbitrary bytes."""
    assert murmur2(data) == _java_murmur2(data)


@given(st.binary(max_size=64))
def test_murmur2_is_a_signed_32_bit_int(data: bytes) -> None:
    """murmur2 always returns a value in Java's int range."""
    assert -(2**31) <= murmur2(data) < 2**31


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_key_partition_is_within_range(key: bytes, partitions: int) -> None:
    """key_partition picks a partition from 0 to partitions - 1."""
    assert 0 <= key_partition(key, partitions) < partitions


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_key_partition_is_stable(key: bytes, partitions: int) -> None:
    """The same key and partition count always give the same partition (a copy of the key too)."""
    assert key_partition(key, partitions) == key_partition(bytes(bytearray(key)), partitions)


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_key_partition_follows_java_default_partitioner(key: bytes, partitions: int) -> None:
    """key_partition is Java's ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``."""
    assert key_partition(key, partitions) == (_java_murmur2(key) & 0x7FFFFFFF) % partitions


def test_key_partition_of_known_key() -> None:
    """A known key lands where the Java producer would put it ("foobar" hashes to -790332482)."""
    assert key_partition(b"foobar", 10) == ((-790332482) & 0x7FFFFFFF) % 10 == 6


def test_target_partition_preserve_keeps_source_partition() -> None:
    """Under ``preserve`` the record goes to the partition it came from, whatever its key."""
    assert target_partition("preserve", b"some-key", 5, 8) == 5


def test_target_partition_key_mode_hashes_the_key() -> None:
    """Under ``key`` a keyed record goes where the Java producer's default partitioner would put it."""
    assert target_partition("key", b"foobar", 1, 10) == key_partition(b"foobar", 10)


@given(st.integers(0, 10_000), st.integers(1, 100))
def test_target_partition_key_mode_without_key_keeps_source_partition_modulo(source: int, partitions: int) -> None:
    """Under ``key`` a record without a key keeps its source partition modulo the target's count."""
    assert target_partition("key", None, source, partitions) == source % partitions


@pytest.mark.parametrize("fixed", [0, 3])
def test_target_partition_fixed_mode_always_uses_that_partition(fixed: int) -> None:
    """Under a fixed partition number every record goes to that partition, keyed or not."""
    assert {
        target_partition(fixed, b"k", 7, 8),
        target_partition(fixed, None, 1, 8),
        target_partition(fixed, b"other", 0, 8),
    } == {fixed}
