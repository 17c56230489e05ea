"""Unit tests of targets.kafka.legacy: the ``kfr-pos`` header of earlier releases, strict decoding and merging."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.message import SourcePartition
from targets.kafka.legacy import HEADER, PositionFormatError, decode, encode, merge

TOPICS = st.from_regex(r"[A-Za-z0-9._-]{1,50}", fullmatch=True)
POSITIONS = st.dictionaries(st.integers(0, 100_000), st.integers(0, 2**63 - 1), max_size=20)
VECTORS = st.lists(
    st.dictionaries(
        st.builds(SourcePartition, st.sampled_from(["a", "b"]), st.integers(0, 5)),
        st.integers(0, 1_000),
        max_size=8,
    ),
    max_size=6,
)


def test_header_name_is_kfr_pos() -> None:
    """The header the positions travel in is called ``kfr-pos``."""
    assert HEADER == "kfr-pos"


def test_encode_writes_the_documented_wire_format() -> None:
    """encode renders ``v1 <topic> <p>:<next>,...`` in ASCII with partitions in ascending order."""
    assert encode("orders", {2: 30, 0: 7, 1: 5}) == b"v1 orders 0:7,1:5,2:30"


@given(TOPICS, POSITIONS)
def test_encode_decode_round_trip(topic: str, positions: dict[int, int]) -> None:
    """decode(encode(topic, positions)) gives every partition of that topic with its next offset."""
    assert decode(encode(topic, positions)) == {SourcePartition(topic, p): o for p, o in positions.items()}


def test_empty_body_decodes_to_empty_dict() -> None:
    """A header with a version and topic but no positions decodes to an empty mapping."""
    assert decode(b"v1 orders ") == {}


def test_encoding_no_positions_round_trips_to_empty_dict() -> None:
    """Encoding an empty positions mapping yields a header that decodes to an empty mapping."""
    assert decode(encode("orders", {})) == {}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"v2 orders 0:1", id="unknown-version"),
        pytest.param(b"V1 orders 0:1", id="version-case"),
        pytest.param(b"", id="empty"),
        pytest.param(b"v1", id="only-version"),
        pytest.param(b"v1 orders", id="no-body-separator"),
        pytest.param(b"v1 0:1", id="no-topic"),
        pytest.param(b"v1 orders 0:1 extra", id="extra-part"),
        pytest.param(b"v1 orders 0", id="no-offset"),
        pytest.param(b"v1 orders 0:1:2", id="too-many-colons"),
        pytest.param(b"v1 orders 0:1,", id="trailing-comma"),
        pytest.param(b"v1 orders 0:", id="empty-offset"),
        pytest.param(b"v1 orders x:1", id="non-int-partition"),
        pytest.param(b"v1 orders 0:ten", id="non-int-offset"),
        pytest.param(b"v1 orders 0:1.5", id="fractional-offset"),
        pytest.param(b"v1 ord\xc3\xa9rs 0:1", id="non-ascii-utf8"),
        pytest.param(b"v1 orders 0:\xff", id="invalid-byte"),
        pytest.param(b"v1  0:1", id="empty-topic"),
        pytest.param(b"v1 orders 0:+5", id="signed-offset"),
        pytest.param(b"v1 orders 0:-5", id="negative-offset"),
        pytest.param(b"v1 orders 0:1_0", id="underscore-digits"),
        pytest.param(b"v1 orders 0:1,0:2", id="partition-twice"),
        pytest.param(b"v1 orders 0:9999999999999999999", id="beyond-any-offset"),
    ],
)
def test_malformed_value_raises_position_format_error(value: bytes) -> None:
    """Any value outside the v1 wire format raises PositionFormatError, never another exception."""
    with pytest.raises(PositionFormatError):
        decode(value)


def test_unknown_version_error_names_the_version() -> None:
    """The error for a header of an unknown version names that version."""
    with pytest.raises(PositionFormatError, match="'v9'"):
        decode(b"v9 orders 0:1")


@given(VECTORS)
def test_merge_is_element_wise_max(vectors: list[dict[SourcePartition, int]]) -> None:
    """merge keeps every source partition seen in any vector, at the largest offset seen for it."""
    expected: dict[SourcePartition, int] = {}
    for vector in vectors:
        for sp, offset in vector.items():
            expected[sp] = max(expected.get(sp, offset), offset)
    assert merge(vectors) == expected


@given(VECTORS.flatmap(lambda vs: st.tuples(st.just(vs), st.permutations(vs))))
def test_merge_is_order_independent(
    pair: tuple[list[dict[SourcePartition, int]], list[dict[SourcePartition, int]]],
) -> None:
    """merge gives the same result whatever order the vectors are found in."""
    vectors, shuffled = pair
    assert merge(vectors) == merge(shuffled)


def test_merge_of_nothing_is_empty() -> None:
    """Merging no vectors at all gives an empty resume point."""
    assert merge([]) == {}
