"""Unit tests of filters on the record path: runs in, kept runs out; built-ins decide on consumed records alone."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from confluent_kafka import Message as KafkaMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from filters import BUILTINS, ChainLink, FilterChain, FilterError
from relay.message import Message, SourcePartition
from relay.run import Run

SP = SourcePartition("in", 3)

CONFIGS: list[tuple[str, Mapping[str, object]]] = [
    ("header", {"header": "h", "equals": "x"}),
    ("header", {"header": "h", "matches": "^a"}),
    ("header", {"header": "h", "exists": True, "invert": True}),
    ("key", {"matches": "b"}),
    ("size", {"min": 2, "max": 5}),
    ("json", {"field": "a.b", "equals": 1, "on_invalid": "keep"}),
    ("json", {"field": "a", "exists": True}),
    ("sample", {"fraction": 0.5}),
    ("sample", {"fraction": 0.5, "null_key": "keep"}),
    ("time", {"from": 1000, "to": 5000}),
]

small = st.one_of(st.none(), st.binary(max_size=6), st.sampled_from([b'{"a": {"b": 1}}', b'{"a": 2}', b"[1]", b"ab"]))
headers = st.lists(st.tuples(st.sampled_from(["h", "g"]), st.one_of(st.none(), st.sampled_from([b"x", b"ab", b""]))))


@settings(max_examples=200, deadline=None)
@given(key=small, value=small, hdrs=headers, ts=st.integers(-1, 6000), offset=st.integers(0, 10**6))
def test_every_builtin_decides_on_a_consumed_record_as_on_its_message(
    key: bytes | None, value: bytes | None, hdrs: list[tuple[str, bytes | None]], ts: int, offset: int
) -> None:
    """keep_consumed and __call__ agree on every record: the record path may skip the Message."""
    raw = KafkaMessage(
        topic="in", partition=3, offset=offset, key=key, value=value, headers=hdrs or None, timestamp=(1, ts)
    )
    (msg,) = Run.consumed("src", SP, "out", [raw]).messages()
    for type_name, config in CONFIGS:
        flt = BUILTINS[type_name](config)
        assert flt.keep_consumed(raw) == flt(msg), (type_name, config)  # type: ignore[attr-defined]


def records(count: int) -> list[KafkaMessage]:
    return [KafkaMessage(topic="in", partition=3, offset=o, key=str(o).encode(), value=b"v") for o in range(count)]


class _Plugin:
    """A plugin filter without keep_consumed: it sees Messages, built once per record."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    def __call__(self, message: Message) -> bool:
        self.seen.append(message)
        return message.source_offset % 2 == 0


def test_a_chain_keeps_a_runs_position_and_builds_messages_once_for_plugins() -> None:
    """A built-in and a plugin in one chain: the kept run ends where the run ended; each Message is built once."""
    plugin = _Plugin()
    chain = FilterChain([ChainLink("k", BUILTINS["key"]({"matches": "^[0-7]$"})), ChainLink("p", plugin)])
    run = Run.consumed("src", SP, "out", records(10))
    kept = chain.select(run)
    assert [m.offset() for m in kept.records] == [0, 2, 4, 6] and kept.next == 10
    assert [m.source_offset for m in plugin.seen] == list(range(8))
    assert kept.messages()[0] is plugin.seen[0]
    assert chain.message_filters == ("p",)
    stats = chain.stats()
    assert (stats["k"].kept, stats["k"].dropped, stats["p"].kept, stats["p"].dropped) == (8, 2, 4, 4)


class _Raises:
    """A filter with keep_consumed that fails on offset 2."""

    def __call__(self, message: Message) -> bool:
        return True

    def keep_consumed(self, record: KafkaMessage) -> bool:
        if record.offset() == 2:
            raise ValueError("cannot decide")
        return True


def test_a_failing_filter_names_the_record_and_on_error_drop_drops_only_it() -> None:
    """A filter raising on one record of a run: fail names that record; drop drops only that record."""
    run = Run.consumed("src", SP, "out", records(4))
    with pytest.raises(FilterError, match=r"filter 'x' failed on record src/in/3@2: ValueError: cannot decide"):
        FilterChain([ChainLink("x", _Raises())]).select(run)
    chain = FilterChain([ChainLink("x", _Raises(), "drop")])
    assert [m.offset() for m in chain.select(run).records] == [0, 1, 3]
    assert chain.stats()["x"].errors == 1
