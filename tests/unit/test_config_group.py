"""Group mode is refused together with settings it cannot honour, with a sentence that says why."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import parse_config
from relay.errors import ConfigError


def _tree(**extra: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "sources": [{"name": "a", "bootstrap_servers": "a:9092"}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "t:9092"},
        "group": {"id": "g"},
    }
    tree.update(extra)
    return tree


def test_group_section_is_parsed() -> None:
    """A group section gives its id and the default session timeout."""
    config = parse_config(_tree())
    assert config.group is not None and (config.group.id, config.group.session_timeout) == ("g", 10.0)


def test_group_with_failover_is_refused() -> None:
    """Group mode and failover mode together is a config error at the group key."""
    tree = _tree(
        mode="failover", sources=[{"name": "a", "bootstrap_servers": "a"}, {"name": "b", "bootstrap_servers": "b"}]
    )
    with pytest.raises(ConfigError, match="cannot be combined with mode: failover") as info:
        parse_config(tree)
    assert info.value.path == "group"


def test_group_with_key_partitioning_is_refused() -> None:
    """Group mode needs partition: preserve; the error points at the topic's partition key."""
    with pytest.raises(ConfigError, match="needs partition: preserve") as info:
        parse_config(_tree(topics=[{"source": "orders", "partition": "key"}]))
    assert info.value.path == "topics[0].partition"


def test_group_with_stop_at_end_is_refused() -> None:
    """Group mode and stop_at_end together is a config error."""
    with pytest.raises(ConfigError, match="stop_at_end"):
        parse_config(_tree(stop_at_end=True))


def test_group_without_id_is_refused() -> None:
    """A group section must name its id."""
    with pytest.raises(ConfigError) as info:
        parse_config(_tree(group={"session_timeout": "5s"}))
    assert info.value.path == "group.id"
