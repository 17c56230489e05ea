"""Unit tests of the config keys that govern how sources are read: on_gap, and the consumer
properties a source's kafka map may not set because the relay sets them itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kafka_lfs_relay.cli import main
from kafka_lfs_relay.config import parse_config
from relay.errors import ConfigError
from relay.settings import SOURCE_MANAGED_PROPERTIES


def tree(**top: Any) -> dict[str, Any]:
    """A minimal valid config tree with two topics; ``top`` keys are merged in."""
    return {
        "sources": [{"name": "east", "bootstrap_servers": "127.0.0.1:1"}],
        "topics": [{"source": "orders"}, {"source": "audit"}],
        "target": {"bootstrap_servers": "127.0.0.1:1"},
        **top,
    }


def error_of(config: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    return info.value


# --- on_gap ------------------------------------------------------------------------------------


def test_on_gap_defaults_to_fail() -> None:
    """Without on_gap anywhere, every topic stops the relay on a gap."""
    assert [t.on_gap for t in parse_config(tree()).topics] == ["fail", "fail"]


def test_top_level_on_gap_is_every_topic_default() -> None:
    """The top-level on_gap applies to each topic that does not set its own."""
    assert [t.on_gap for t in parse_config(tree(on_gap="skip")).topics] == ["skip", "skip"]


def test_topic_on_gap_overrides_the_top_level_one() -> None:
    """topics[].on_gap wins over the top-level default, in both directions."""
    config = tree(on_gap="skip")
    config["topics"][1]["on_gap"] = "fail"
    assert [t.on_gap for t in parse_config(config).topics] == ["skip", "fail"]
    config = tree()
    config["topics"][0]["on_gap"] = "skip"
    assert [t.on_gap for t in parse_config(config).topics] == ["skip", "fail"]


@pytest.mark.parametrize(("where", "path"), [("top", "on_gap"), ("topic", "topics[1].on_gap")])
def test_unknown_on_gap_is_named(where: str, path: str) -> None:
    """A value other than fail or skip is refused by its key path, listing the choices (no jump to the end)."""
    config = tree(on_gap="latest") if where == "top" else tree()
    if where == "topic":
        config["topics"][1]["on_gap"] = "latest"
    error = error_of(config)
    assert (error.path, error.message) == (path, "expected one of fail, skip")
    assert "'latest'" in str(error)


# --- consumer properties the relay manages -----------------------------------------------------


@pytest.mark.parametrize("key", sorted(SOURCE_MANAGED_PROPERTIES))
def test_managed_consumer_property_is_refused_by_its_path(key: str) -> None:
    """Each property the relay sets on its source consumers is refused in sources[i].kafka, naming why."""
    config = tree(mode="failover")
    config["sources"].append({"name": "west", "bootstrap_servers": "127.0.0.1:2", "kafka": {key: "x"}})
    error = error_of(config)
    assert error.path == f"sources[1].kafka.{key}"
    assert error.message.startswith("is set by the relay and cannot be overridden: ")
    assert str(error).count("\n") == 0


def test_auto_offset_reset_is_refused_whatever_the_value() -> None:
    """auto.offset.reset is refused even when it asks for error: the relay owns it; the reason names on_gap."""
    config = tree()
    config["sources"][0]["kafka"] = {"auto.offset.reset": "error"}
    error = error_of(config)
    assert error.path == "sources[0].kafka.auto.offset.reset"
    assert "on_gap" in error.message


def test_other_consumer_properties_still_pass_through() -> None:
    """Properties the relay does not manage (fetch sizes, security) are accepted as before."""
    config = tree()
    config["sources"][0]["kafka"] = {"fetch.max.bytes": 1048576, "security.protocol": "SSL"}
    assert parse_config(config).sources[0].kafka == {"fetch.max.bytes": "1048576", "security.protocol": "SSL"}


def test_target_kafka_map_is_not_restricted_by_the_source_rule() -> None:
    """The rule is about source consumers: the target's producer map may name isolation.level-like keys."""
    config = tree()
    config["target"]["kafka"] = {"enable.auto.commit": "false"}
    parse_config(config)


def test_check_refuses_a_managed_property_with_the_config_error(tmp_path: Path, capsys: Any) -> None:
    """`check` reports the refused property as the one-line config error, exit 2, before touching a network."""
    config = tree()
    config["sources"][0]["kafka"] = {"auto.offset.reset": "earliest"}
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kafka-lfs-relay: config key 'sources[0].kafka.auto.offset.reset': is set by the relay")
    assert len(err.splitlines()) == 1
