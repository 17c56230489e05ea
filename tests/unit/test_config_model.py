"""Unit tests of kafka_lfs_relay.config.model.parse_config and relay.options.Section: defaults and errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kafka_lfs_relay.config import LogConfig, RelayConfig, parse_config
from relay.errors import ConfigError
from relay.options import Section
from relay.settings import MIB, Backoff, ClusterConfig, SourcePoolConfig, TopicConfig
from targets.kafka import BatchConfig, KafkaTargetConfig

SECRET = "hunter2-s3cr3t"


def minimal() -> dict[str, Any]:
    """A fresh minimal valid config tree: one source, one topic, a target."""
    return {
        "sources": [{"name": "primary", "bootstrap_servers": "src:9092"}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "dst:9092"},
    }


def failover(*names: str) -> dict[str, Any]:
    """A minimal valid failover config with one source per name."""
    tree = minimal()
    tree["mode"] = "failover"
    tree["sources"] = [{"name": n, "bootstrap_servers": f"{n}:9092"} for n in names]
    return tree


def config_error(tree: object) -> ConfigError:
    """The ConfigError parse_config raises for ``tree`` (fails the test if it raises nothing)."""
    with pytest.raises(ConfigError) as info:
        parse_config(tree)
    return info.value


# --- defaults ----------------------------------------------------------------------------------


def test_minimal_config_top_level_defaults() -> None:
    """A minimal config gets the RelayConfig defaults: single mode, default name, pool, budget, logs."""
    config = parse_config(minimal())
    assert isinstance(config, RelayConfig)
    assert (config.name, config.mode, config.stop_at_end) == ("kafka-lfs-relay", "single", False)
    assert config.source_pool == SourcePoolConfig()
    assert config.filters == ()
    assert config.max_in_flight == 256 * MIB
    assert config.metrics_listen is None
    assert config.log == LogConfig()


def test_minimal_config_source_and_topic_defaults() -> None:
    """A source keeps its name and servers with no extra properties; a topic goes to the same name, preserved."""
    config = parse_config(minimal())
    assert config.sources == (ClusterConfig("primary", "src:9092", {}),)
    assert config.topics == (TopicConfig("orders", "orders", "preserve"),)


def test_minimal_config_target_defaults() -> None:
    """A minimal target is a kafka target named 'target' with the documented batch, retry and transaction defaults."""
    config = parse_config(minimal()).target
    assert config.type == "kafka"
    target = config.settings
    assert isinstance(target, KafkaTargetConfig) and target == config.kafka
    assert target.cluster == ClusterConfig("target", "dst:9092", {})
    assert target.batch == BatchConfig() == BatchConfig(20_000, 64 * MIB, 0.05)
    assert target.retry == Backoff(0.2, 10.0)
    assert (target.transactional_id, target.transaction_timeout, target.create_topics) == (None, 60.0, True)


def test_source_pool_defaults_are_the_documented_values() -> None:
    """SourcePoolConfig's defaults are the values its dataclass documents."""
    assert SourcePoolConfig() == SourcePoolConfig(2.0, 1.0, 10_000, 2, 2, 30.0, False, True, Backoff(0.5, 30.0))


def test_unnamed_sources_get_numbered_names() -> None:
    """Sources without a name are called source-1, source-2... in list order."""
    tree = failover("x", "y")
    for source in tree["sources"]:
        del source["name"]
    assert [s.name for s in parse_config(tree).sources] == ["source-1", "source-2"]


def test_yaml_values_are_parsed_into_units() -> None:
    """Durations and sizes written in YAML become seconds and bytes."""
    tree = yaml.safe_load(
        """
        sources: [{name: a, bootstrap_servers: "a:9092"}]
        topics: [{source: orders, target: orders-copy, partition: key}]
        target: {bootstrap_servers: "t:9092", batch: {max_bytes: 1MiB, linger: 250ms}}
        source_pool: {healthcheck_interval: 1m30s, backoff: {min: 100ms, max: 5s}}
        max_in_flight: 64MiB
        metrics: {listen: "127.0.0.1:9464"}
        """
    )
    config = parse_config(tree)
    assert (config.target.settings.batch.max_bytes, config.target.settings.batch.linger) == (MIB, 0.25)
    assert (config.source_pool.healthcheck_interval, config.source_pool.backoff) == (90.0, Backoff(0.1, 5.0))
    assert (config.max_in_flight, config.metrics_listen) == (64 * MIB, ("127.0.0.1", 9464))
    assert config.topics == (TopicConfig("orders", "orders-copy", "key"),)


@pytest.mark.parametrize(("raw", "expected"), [("preserve", "preserve"), ("key", "key"), (0, 0), (7, 7)])
def test_partition_modes_accepted(raw: object, expected: object) -> None:
    """A topic's partition may be preserve, key or a partition number >= 0."""
    tree = minimal()
    tree["topics"][0]["partition"] = raw
    assert parse_config(tree).topics[0].partition == expected


# --- errors: unknown keys ----------------------------------------------------------------------


def test_unknown_top_level_key_has_did_you_mean_hint() -> None:
    """A misspelled top-level key is rejected by its path with the likely intended spelling."""
    tree = minimal()
    tree["stop_at_ends"] = True
    error = config_error(tree)
    assert error.path == "stop_at_ends"
    assert "unknown key" in str(error)
    assert "did you mean 'stop_at_end'" in str(error)


def test_unknown_nested_key_is_named_by_full_path() -> None:
    """A misspelled key deep in the tree is rejected by its full dotted path, with a hint."""
    tree = minimal()
    tree["target"]["batch"] = {"max_recs": 10}
    error = config_error(tree)
    assert error.path == "target.batch.max_recs"
    assert "did you mean 'max_records'" in str(error)


def test_unknown_key_in_a_source_is_rejected() -> None:
    """A misspelled key in a source entry is rejected by its path, like everywhere else."""
    tree = minimal()
    tree["sources"][0]["kafak"] = {"security.protocol": "SASL_SSL"}
    error = config_error(tree)
    assert error.path == "sources[0].kafak"
    assert "did you mean 'kafka'" in str(error)


def test_target_lfs_is_parsed_by_the_lfs_target() -> None:
    """Under type lfs, target.lfs is validated by the lfs target's own parser, which names an unknown key."""
    tree = minimal()
    tree["target"]["type"] = "lfs"
    tree["target"]["lfs"] = {"s3": {"bucket": "b"}, "threshold": "2MiB"}
    assert parse_config(tree).target.settings.lfs.threshold == 2 * MIB
    tree["target"]["lfs"]["anything"] = [1, 2]
    error = config_error(tree)
    assert error.path == "target.lfs.anything"
    assert "unknown key" in str(error)


def test_lfs_section_under_type_kafka_is_refused() -> None:
    """An lfs section under target.type kafka, which would be ignored, is an error naming target.lfs."""
    tree = minimal()
    tree["target"]["lfs"] = {"threshold": "1MiB"}
    error = config_error(tree)
    assert error.path == "target.lfs"
    assert "does not apply to target.type kafka (only to type lfs)" in str(error)


def test_options_section_under_a_builtin_type_is_refused() -> None:
    """target.options, read only by custom targets, is an error under a built-in type."""
    tree = minimal()
    tree["target"]["type"] = "hydrate"
    tree["target"]["options"] = {"path": "x"}
    error = config_error(tree)
    assert error.path == "target.options"


def test_custom_target_gets_its_options_and_nothing_else() -> None:
    """A custom target's settings are its options mapping; a Kafka-target key under it is an unknown key."""
    tree = minimal()
    tree["target"] = {"type": "pkg.mod:Cls", "options": {"path": "x"}}
    assert parse_config(tree).target.settings == {"path": "x"}
    tree["target"]["batch"] = {"linger": "1s"}
    assert config_error(tree).path == "target.batch"


# --- errors: values ----------------------------------------------------------------------------


def test_bad_duration_names_path_and_value() -> None:
    """An unparseable duration is rejected by its path and shows the value."""
    tree = minimal()
    tree["source_pool"] = {"healthcheck_interval": "5 parsecs"}
    error = config_error(tree)
    assert error.path == "source_pool.healthcheck_interval"
    assert "'5 parsecs'" in str(error)


def test_bad_size_names_path_and_value() -> None:
    """An unparseable size is rejected by its path and shows the value."""
    tree = minimal()
    tree["target"]["batch"] = {"max_bytes": "16 MegaBytes"}
    error = config_error(tree)
    assert error.path == "target.batch.max_bytes"
    assert "'16 MegaBytes'" in str(error)


def test_mode_single_with_two_sources() -> None:
    """Mode single with two sources is rejected at 'sources', saying how many and pointing to failover."""
    tree = failover("a", "b")
    tree["mode"] = "single"
    error = config_error(tree)
    assert error.path == "sources"
    assert "got 2" in str(error)
    assert "failover" in str(error)


def test_duplicate_source_names() -> None:
    """Two sources with the same name are rejected at the second one's name."""
    error = config_error(failover("a", "b", "a"))
    assert error.path == "sources[2].name"
    assert "'a'" in str(error)


def test_topic_listed_twice() -> None:
    """The same source topic listed twice is rejected at the second listing."""
    tree = minimal()
    tree["topics"] = [{"source": "orders"}, {"source": "payments"}, {"source": "orders", "target": "other"}]
    error = config_error(tree)
    assert error.path == "topics[2].source"
    assert "'orders'" in str(error)


def test_two_source_topics_into_one_target_topic() -> None:
    """Two source topics mapped to the same target topic are rejected at the second one's target."""
    tree = minimal()
    tree["topics"] = [{"source": "orders", "target": "all"}, {"source": "payments", "target": "all"}]
    error = config_error(tree)
    assert error.path == "topics[1].target"
    assert "'all'" in str(error)


@pytest.mark.parametrize("name", ["bad topic", "a/b", "ümlaut", ".", "..", "x" * 250])
def test_illegal_source_topic_name(name: str) -> None:
    """A source topic name Kafka would refuse is rejected by its path and shown."""
    tree = minimal()
    tree["topics"][0]["source"] = name
    error = config_error(tree)
    assert error.path == "topics[0].source"
    assert repr(name)[:20] in str(error)


def test_illegal_target_topic_name() -> None:
    """A target topic name Kafka would refuse is rejected by its path and shown."""
    tree = minimal()
    tree["topics"][0]["target"] = "orders!"
    error = config_error(tree)
    assert error.path == "topics[0].target"
    assert "'orders!'" in str(error)


def test_invalid_partition_mode() -> None:
    """A partition mode other than preserve, key or a number is rejected by its path and shown."""
    tree = minimal()
    tree["topics"][0]["partition"] = "hash"
    error = config_error(tree)
    assert error.path == "topics[0].partition"
    assert "'hash'" in str(error)


@pytest.mark.parametrize("raw", [-1, True, 1.5])
def test_invalid_partition_number(raw: object) -> None:
    """A negative, boolean or fractional partition is rejected by its path and shown."""
    tree = minimal()
    tree["topics"][0]["partition"] = raw
    error = config_error(tree)
    assert error.path == "topics[0].partition"
    assert f"got {raw!r}" in str(error)


def test_source_pool_backoff_max_below_min() -> None:
    """A backoff whose max is less than its min is rejected at max, showing it."""
    tree = minimal()
    tree["source_pool"] = {"backoff": {"min": "5s", "max": "1s"}}
    error = config_error(tree)
    assert error.path == "source_pool.backoff.max"
    assert "source_pool.backoff.min" in str(error)
    assert "'1s'" in str(error)


def test_target_retry_backoff_max_below_min() -> None:
    """The target's retry backoff is checked the same way, at its own path."""
    tree = minimal()
    tree["target"]["retry"] = {"backoff": {"min": "2s", "max": "500ms"}}
    error = config_error(tree)
    assert error.path == "target.retry.backoff.max"
    assert "'500ms'" in str(error)


@pytest.mark.parametrize("listen", ["127.0.0.1", "localhost:", "localhost:http", "0.0.0.0:70000"])
def test_metrics_listen_without_valid_port(listen: str) -> None:
    """metrics.listen without a usable port is rejected by its path and shown."""
    tree = minimal()
    tree["metrics"] = {"listen": listen}
    error = config_error(tree)
    assert error.path == "metrics.listen"
    assert repr(listen) in str(error)


def test_metrics_listen_with_non_ascii_digit_port() -> None:
    """A port written with a non-ASCII digit is a ConfigError, not a crash."""
    tree = minimal()
    tree["metrics"] = {"listen": "127.0.0.1:²"}
    assert config_error(tree).path == "metrics.listen"


def test_metrics_stall_timeout_defaults_and_parses() -> None:
    """metrics.stall_timeout (liveness) is 2 minutes unless set; it is a positive duration."""
    assert parse_config(minimal()).stall_timeout == 120.0
    tree = minimal()
    tree["metrics"] = {"listen": "0.0.0.0:9464", "stall_timeout": "45s"}
    assert parse_config(tree).stall_timeout == 45.0
    tree["metrics"]["stall_timeout"] = "0s"
    assert config_error(tree).path == "metrics.stall_timeout"


def test_bootstrap_servers_inside_kafka_map() -> None:
    """bootstrap.servers in a cluster's kafka map is rejected by its path, pointing to bootstrap_servers."""
    tree = minimal()
    tree["sources"][0]["kafka"] = {"bootstrap.servers": "other:9092"}
    error = config_error(tree)
    assert error.path == "sources[0].kafka.bootstrap.servers"
    assert "bootstrap_servers" in error.message


def test_bootstrap_servers_inside_target_kafka_map() -> None:
    """bootstrap.servers in the target's kafka map is rejected by its path too."""
    tree = minimal()
    tree["target"]["kafka"] = {"bootstrap.servers": "other:9092"}
    assert config_error(tree).path == "target.kafka.bootstrap.servers"


def test_batch_max_bytes_defaults_to_a_smaller_max_in_flight() -> None:
    """With max_in_flight below 64 MiB and no batch.max_bytes, batches are cut at max_in_flight."""
    tree = minimal()
    tree["max_in_flight"] = "8MiB"
    assert parse_config(tree).target.settings.batch.max_bytes == 8 * MIB


def test_max_in_flight_smaller_than_batch_max_bytes() -> None:
    """A max_in_flight below target.batch.max_bytes is rejected at max_in_flight, showing its byte count."""
    tree = minimal()
    tree["max_in_flight"] = "8MiB"
    tree["target"]["batch"] = {"max_bytes": "16MiB"}
    error = config_error(tree)
    assert error.path == "max_in_flight"
    assert str(8 * MIB) in str(error)
    assert "target.batch.max_bytes" in str(error)


def test_sources_required() -> None:
    """A config without sources is rejected at 'sources'."""
    tree = minimal()
    del tree["sources"]
    assert config_error(tree).path == "sources"


def test_empty_sources_list() -> None:
    """An empty sources list is rejected at 'sources'."""
    tree = minimal()
    tree["sources"] = []
    assert config_error(tree).path == "sources"


def test_target_bootstrap_servers_required() -> None:
    """A target without bootstrap_servers is rejected at that path."""
    tree = minimal()
    tree["target"] = {}
    assert config_error(tree).path == "target.bootstrap_servers"


def test_top_level_not_a_mapping() -> None:
    """A config file that is not a mapping is rejected for the top level."""
    assert config_error(["sources"]).path == "(top level)"


# --- secrets -----------------------------------------------------------------------------------


def with_password(password: object) -> dict[str, Any]:
    """A minimal config whose source carries a SASL password."""
    tree = minimal()
    tree["sources"][0]["kafka"] = {"security.protocol": "SASL_SSL", "sasl.password": password}
    return tree


def test_secret_absent_from_cluster_repr() -> None:
    """A SASL password never appears in the repr of the parsed ClusterConfig."""
    cluster = parse_config(with_password(SECRET)).sources[0]
    assert cluster.kafka["sasl.password"] == SECRET
    assert SECRET not in repr(cluster)


def test_secret_absent_from_relay_config_repr() -> None:
    """A SASL password never appears in the repr of the whole parsed RelayConfig."""
    assert SECRET not in repr(parse_config(with_password(SECRET)))


def test_secret_absent_from_error_about_its_key() -> None:
    """An error about a password key names the key but never shows the password."""
    error = config_error(with_password([SECRET]))
    assert error.path == "sources[0].kafka.sasl.password"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert "'***'" in str(error)


# --- Section (reader) --------------------------------------------------------------------------


def test_section_rejects_a_non_mapping() -> None:
    """A section whose value is not a mapping is rejected by its path."""
    with pytest.raises(ConfigError) as info:
        Section(["x"], "target.batch")
    assert info.value.path == "target.batch"


def test_section_finish_rejects_unread_keys() -> None:
    """finish() rejects a key no reader asked for, naming it by its dotted path."""
    sec = Section({"linger": "1s", "extra": 1}, "target.batch")
    sec.duration("linger")
    with pytest.raises(ConfigError) as info:
        sec.finish()
    assert info.value.path == "target.batch.extra"


def test_section_missing_required_key() -> None:
    """Reading a required key that is absent is an error 'is required' at its path."""
    with pytest.raises(ConfigError, match="is required") as info:
        Section({}, "sources[0]").text("bootstrap_servers")
    assert info.value.path == "sources[0].bootstrap_servers"


def test_section_null_reads_as_default() -> None:
    """A key present with a null value reads as the default."""
    assert Section({"linger": None}, "target.batch").duration("linger", 0.05) == 0.05


def test_section_flag_rejects_non_boolean() -> None:
    """A flag given as a string is rejected, showing the value."""
    with pytest.raises(ConfigError, match="'yes'") as info:
        Section({"create_topics": "yes"}, "target").flag("create_topics", True)
    assert info.value.path == "target.create_topics"


def test_section_string_map_renders_scalars_as_strings() -> None:
    """string_map renders booleans and numbers the way librdkafka expects them."""
    sec = Section({"kafka": {"enable.idempotence": True, "linger.ms": 5, "acks": "all"}}, "target")
    assert sec.string_map("kafka") == {"enable.idempotence": "true", "linger.ms": "5", "acks": "all"}


def test_positions_topic_defaults_to_the_relays_name() -> None:
    """Without target.positions_topic a relay keeps its positions in '<name>-positions'."""
    tree = minimal()
    tree["name"] = "orders-mirror"
    kafka = parse_config(tree).target.kafka
    assert kafka is not None and kafka.positions_topic_for("orders-mirror") == "orders-mirror-positions"


def test_a_name_that_makes_no_topic_name_needs_an_explicit_positions_topic() -> None:
    """A relay name that is no legal topic name is refused unless target.positions_topic is set."""
    tree = minimal()
    tree["name"] = "orders mirror"
    error = config_error(tree)
    assert error.path == "target.positions_topic" and "'orders mirror-positions'" in str(error)
    tree["target"]["positions_topic"] = "orders-positions"
    assert parse_config(tree).target.settings.positions_topic == "orders-positions"
