"""Unit tests of topic selection: patterns, excludes, internal topics, templates, collisions, discovery merges."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import parse_config
from relay.discovery import TopicWatch
from relay.errors import ConfigError
from relay.selection import Change, Routes, TopicRule, TopicSelection, collisions, is_internal, render
from relay.settings import ClusterConfig, TopicConfig


def tree(*topics: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config tree with one source called ``east`` and ``topics``."""
    return {
        "sources": [{"name": "east", "bootstrap_servers": "src:9092"}],
        "topics": list(topics),
        "target": {"bootstrap_servers": "dst:9092"},
        **top,
    }


def error_of(raw: dict[str, Any]) -> ConfigError:
    """The ConfigError ``raw`` is refused with."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value


def test_a_pattern_selects_whole_names_and_leaves_out_excluded_and_internal_topics() -> None:
    """A pattern is anchored, its excludes win, and internal topics are never selected."""
    config = parse_config(tree({"source_pattern": "orders.*", "exclude": ["orders-test.*"]}))
    routes = config.rules.routes(["orders", "orders.eu", "orders-test-1", "my-orders", "orders-positions", "_x"])
    assert sorted(routes) == ["orders", "orders.eu"]
    assert routes["orders.eu"] == TopicConfig("orders.eu", "orders.eu", "preserve", "fail")


@pytest.mark.parametrize(
    "name",
    ["__consumer_offsets", "_schemas", "relay-positions", "connect-offsets", "x.internal", "y-internal", "heartbeats"],
)
def test_internal_topics_are_recognised(name: str) -> None:
    """Kafka's, Schema Registry's, Connect's, MirrorMaker's and relays' own topics are internal."""
    assert is_internal(name)


def test_an_internal_topic_named_explicitly_is_relayed() -> None:
    """Naming an internal topic is the way to relay it."""
    config = parse_config(tree({"source": "_schemas"}, {"source_pattern": ".*"}))
    assert sorted(config.rules.routes(["_schemas", "__consumer_offsets", "a"])) == ["_schemas", "a"]


def test_an_explicit_entry_wins_over_a_pattern_and_the_first_pattern_wins() -> None:
    """Each topic takes exactly one rule: its explicit entry, else the first pattern selecting it."""
    config = parse_config(
        tree(
            {"source_pattern": "a.*", "target": "one.{topic}", "partition": "key"},
            {"source_pattern": "ab.*", "target": "two.{topic}"},
            {"source": "abc", "target": "named"},
        )
    )
    routes = config.rules.routes(["abc", "abd", "a"])
    assert routes["abc"].target == "named"
    assert routes["abd"] == TopicConfig("abd", "one.abd", "key", "fail")
    assert routes["a"].target == "one.a"


def test_templates_fill_topic_and_source() -> None:
    """{topic} is the source topic and {source} the source cluster's name."""
    config = parse_config(
        tree({"source_pattern": ".*", "target": "{source}.{topic}"}, {"source": "x", "target": "dr-{topic}"})
    )
    assert config.topics == (TopicConfig("x", "dr-x"),)
    assert config.rules.routes(["orders"])["orders"].target == "east.orders"
    assert render("{source}-{topic}-{topic}", "t", "s") == "s-t-t"


@pytest.mark.parametrize(
    ("topics", "path", "words"),
    [
        ([{"source_pattern": ".*", "target": "all"}], "topics[0].target", "must contain {topic}"),
        ([{"source": "a", "target": "x"}, {"source": "b", "target": "x"}], "topics[1].target", "same target topic"),
        ([{"source_pattern": ".*"}, {"source": "a", "target": "b"}], "topics[1].target", "could both write"),
        (
            [{"source_pattern": ".*"}, {"source_pattern": "x.*", "target": "dr-{topic}"}],
            "topics[1].target",
            "could send",
        ),
        ([{"source_pattern": "(", "target": "{topic}"}], "topics[0].source_pattern", "not a regular expression"),
        ([{"source_pattern": "a", "exclude": ["["]}], "topics[0].exclude[0]", "not a regular expression"),
        ([{"source": "a", "source_pattern": "a"}], "topics[0].source", "either source"),
        ([{"source": "a", "exclude": ["b"]}], "topics[0].exclude", "source_pattern only"),
        ([{"source_pattern": "a.*", "target": "{topic"}], "topics[0].target", "placeholders"),
        ([{"source_pattern": "a.*", "target": "x/{topic}"}], "topics[0].target", "legal Kafka topic name"),
    ],
)
def test_rules_that_could_collide_or_cannot_work_are_refused_at_config_time(
    topics: list[dict[str, Any]], path: str, words: str
) -> None:
    """A rule that could send two topics into one target topic, or that is malformed, is refused by its path."""
    error = error_of(tree(*topics))
    assert error.path == path
    assert words in error.message


def test_rules_that_cannot_meet_are_accepted() -> None:
    """Same templates, prefixes that cannot meet, and an explicit target no pattern can make all pass."""
    parse_config(
        tree(
            {"source_pattern": "a.*", "target": "dr-{topic}"},
            {"source_pattern": "b.*", "target": "dr-{topic}"},
            {"source_pattern": "c.*", "target": "bk-{topic}"},
            {"source": "d", "target": "zz"},
        )
    )
    assert collisions((TopicRule(pattern="a.*", target="{topic}"), TopicRule(source="x", target="b")), "s") is None


def test_source_in_a_failover_template_is_refused() -> None:
    """In failover the target topic would change at every switch, so {source} is refused."""
    raw = tree({"source_pattern": ".*", "target": "{source}.{topic}"}, mode="failover")
    raw["sources"].append({"name": "west", "bootstrap_servers": "w:9092"})
    error = error_of(raw)
    assert error.path == "topics[0].target"
    assert "failover" in error.message


def test_topic_refresh_and_provenance_are_read() -> None:
    """topic_refresh defaults to 30s; provenance is off unless enabled; cluster ids are read."""
    config = parse_config(tree({"source": "a"}))
    assert config.rules.refresh == 30.0 and not config.provenance
    raw = tree({"source_pattern": "a.*"}, topic_refresh="2s", provenance={"enabled": True})
    raw["sources"][0]["id"] = "east-1"
    config = parse_config(raw)
    assert config.rules.refresh == 2.0 and config.provenance and config.sources[0].id == "east-1"
    raw["sources"][0]["id"] = "bad id"
    assert error_of(raw).path == "sources[0].id"


def test_group_mode_needs_preserve_on_pattern_entries_too() -> None:
    """Every entry, pattern or not, must preserve partitions in group mode."""
    error = error_of(tree({"source_pattern": "a.*", "partition": "key"}, group={"id": "g"}))
    assert error.path == "topics[0].partition"


def test_routes_grow_without_changing_what_a_reader_holds() -> None:
    """An addition replaces the mapping: an iteration begun before it is not disturbed, and a route stays."""
    routes = Routes([TopicConfig("a", "a")])
    seen = iter(routes)
    routes.add([TopicConfig("b", "b"), TopicConfig("a", "other")])
    assert list(seen) == ["a"]
    assert dict(routes) == {"a": TopicConfig("a", "a"), "b": TopicConfig("b", "b")}


def _watch() -> TopicWatch:
    selection = TopicSelection((TopicRule(pattern=".*"),), "east")
    return TopicWatch(selection, {"east": ClusterConfig("east", "x:1")}, lambda: "east", 1.0)


def test_a_topic_that_came_and_went_before_the_relay_took_it_never_reaches_the_relay() -> None:
    """Discovery's pending change drops a topic created and deleted between two takes."""
    watch = _watch()
    watch._merge(Change([TopicConfig("t", "t")], []))
    watch._merge(Change([], ["t"]))
    assert watch.take() is None


def test_a_topic_deleted_and_created_again_before_the_take_stays_read() -> None:
    """A topic the relay reads that went and came back between two takes is neither removed nor added."""
    watch = _watch()
    watch._merge(Change([], ["t"]))
    watch._merge(Change([TopicConfig("t", "t")], []))
    assert watch.take() is None
    watch._merge(Change([TopicConfig("u", "u")], ["v"]))
    change = watch.take()
    assert change is not None and change.added == [TopicConfig("u", "u")] and change.removed == ["v"]


def test_a_topic_named_like_a_mirror_of_the_target_is_not_selected() -> None:
    """Under "{source}.{topic}" into cluster dr, a pattern never selects dr.<x>: it came from there."""
    raw = tree({"source_pattern": ".*", "target": "{source}.{topic}"})
    raw["target"]["name"] = "dr"
    config = parse_config(raw)
    assert sorted(config.rules.routes(["orders", "dr.orders", "dr.", "east.orders"])) == [
        "dr.",
        "east.orders",
        "orders",
    ]
    raw["topics"] = [{"source_pattern": ".*", "target": "copy-{topic}"}]
    assert "dr.orders" in parse_config(raw).rules.routes(["dr.orders"])
