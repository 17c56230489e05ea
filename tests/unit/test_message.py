"""Unit tests of relay.message: the Message record, its helpers and record_size."""

from __future__ import annotations

import dataclasses

import pytest

from relay.message import Headers, Message, SourcePartition, record_size


def message(headers: Headers = ()) -> Message:
    """A record read from ``src/orders/3@42`` with the given headers."""
    return Message(
        key=b"k",
        value=b"v",
        headers=headers,
        topic="orders-copy",
        source_cluster="src",
        source_topic="orders",
        source_partition=3,
        source_offset=42,
        timestamp_ms=1_700_000_000_000,
    )


def test_message_is_frozen() -> None:
    """Assigning to a field of a Message raises FrozenInstanceError."""
    msg = message()
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.source_offset = 43  # type: ignore[misc]


def test_constructor_sets_every_field_positionally_and_by_name() -> None:
    """The hand-written constructor sets each dataclass field, in declaration order, and by keyword."""
    names = [f.name for f in dataclasses.fields(Message)]
    values = [object() for _ in names]
    by_position = Message(*values)  # type: ignore[arg-type]
    by_name = Message(**dict(zip(names, values, strict=True)))  # type: ignore[arg-type]
    assert [getattr(by_position, n) for n in names] == values
    assert [getattr(by_name, n) for n in names] == values


def test_size_defaults_to_zero_and_replace_keeps_the_rest() -> None:
    """size defaults to 0, and dataclasses.replace changes only the named field."""
    msg = message()
    assert msg.size == 0
    changed = dataclasses.replace(msg, value=b"other")
    assert changed.value == b"other"
    assert dataclasses.replace(changed, value=b"v") == msg


def test_header_returns_the_last_header_of_that_name() -> None:
    """header() returns the value of the last header with that name when several share it."""
    msg = message((("trace", b"first"), ("other", b"x"), ("trace", b"second")))
    assert msg.header("trace") == b"second"


def test_header_returns_none_when_absent() -> None:
    """header() returns None for a name no header has."""
    assert message((("trace", b"x"),)).header("missing") is None


def test_header_names_are_case_sensitive() -> None:
    """header() matches names exactly, as Kafka does."""
    assert message((("Trace", b"x"),)).header("trace") is None


def test_coordinates_format() -> None:
    """coordinates() is ``cluster/topic/partition@offset`` of the source record."""
    assert message().coordinates() == "src/orders/3@42"


def test_source_is_the_source_partition() -> None:
    """The source property names the source topic and partition the record was read from."""
    assert message().source == SourcePartition("orders", 3)


def test_record_size_counts_the_key() -> None:
    """A key adds its length to record_size."""
    assert record_size(b"x" * 10, None, ()) - record_size(None, None, ()) == 10


def test_record_size_counts_the_value() -> None:
    """A value adds its length to record_size."""
    assert record_size(None, b"x" * 1000, ()) - record_size(None, None, ()) == 1000


def test_record_size_counts_header_names_and_values() -> None:
    """Each header adds the length of its name and of its value (a null value adds nothing)."""
    base = record_size(None, None, ())
    assert record_size(None, None, (("trace", b"12345678"),)) - base == 5 + 8
    assert record_size(None, None, (("trace", None), ("ab", b"c"))) - base == 5 + 2 + 1


def test_record_size_of_empty_record_is_positive() -> None:
    """Even an empty record counts a positive overhead against the budget."""
    assert record_size(None, None, ()) > 0
