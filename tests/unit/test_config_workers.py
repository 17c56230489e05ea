"""``workers``: a number or auto, group mode implied (its id the relay's name), and group mode's limits."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import parse_config
from kafka_lfs_relay.config.model import parse_workers, with_workers
from relay.errors import ConfigError


def _tree(**extra: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "name": "orders-mirror",
        "sources": [{"name": "a", "bootstrap_servers": "a:9092"}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "t:9092"},
    }
    tree.update(extra)
    return tree


def test_no_workers_means_one_process_outside_group_mode() -> None:
    """Without workers, nothing changes: one process, no group."""
    config = parse_config(_tree())
    assert config.workers is None and config.group is None


@pytest.mark.parametrize(("value", "expected"), [(4, 4), (1, 1), ("auto", "auto"), ("2", 2)])
def test_workers_imply_group_mode_named_after_the_relay(value: object, expected: object) -> None:
    """workers: N (even 1, and auto) runs in group mode, with the relay's name as group id."""
    config = parse_config(_tree(workers=value))
    assert config.workers == expected
    assert config.group is not None and config.group.id == "orders-mirror"


def test_a_group_section_keeps_its_own_id() -> None:
    """With a group section, workers join that group."""
    config = parse_config(_tree(workers=2, group={"id": "g", "session_timeout": "6s"}))
    assert config.group is not None and (config.group.id, config.group.session_timeout) == ("g", 6.0)


@pytest.mark.parametrize("value", [0, -1, "many", True, 1.5])
def test_bad_worker_counts_are_refused(value: object) -> None:
    """Anything but a number >= 1 or auto is an error at the workers key."""
    with pytest.raises(ConfigError, match="auto") as info:
        parse_config(_tree(workers=value))
    assert info.value.path == "workers"


def test_workers_with_failover_are_refused() -> None:
    """Workers share partitions as a group, which lives on one source cluster."""
    tree = _tree(
        workers=2,
        mode="failover",
        sources=[{"name": "a", "bootstrap_servers": "a"}, {"name": "b", "bootstrap_servers": "b"}],
    )
    with pytest.raises(ConfigError, match="mode: failover") as info:
        parse_config(tree)
    assert info.value.path == "workers"


def test_workers_with_stop_at_end_are_refused() -> None:
    """Partitions move between workers, so there is no end to stop at."""
    with pytest.raises(ConfigError, match="stop_at_end") as info:
        parse_config(_tree(workers="auto", stop_at_end=True))
    assert info.value.path == "workers"


def test_workers_with_key_partitioning_are_refused() -> None:
    """As in group mode, each source partition needs one target partition to fence."""
    with pytest.raises(ConfigError, match="needs partition: preserve"):
        parse_config(_tree(workers=2, topics=[{"source": "orders", "partition": "key"}]))


def test_the_command_line_override_implies_group_mode_too() -> None:
    """run --workers N on a config without workers: the same as workers: N in the file."""
    config = with_workers(parse_config(_tree()), parse_workers("3", "--workers"))
    assert config.workers == 3 and config.group is not None and config.group.id == "orders-mirror"
    with pytest.raises(ConfigError) as info:
        parse_workers("0", "--workers")
    assert info.value.path == "--workers"
