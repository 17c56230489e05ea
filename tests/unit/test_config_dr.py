"""Unit tests of the disaster-recovery settings: group_offsets, and the offsets command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kafka_lfs_relay.cli import build_parser, main
from kafka_lfs_relay.config import parse_config
from kafka_lfs_relay.config.model import GroupOffsetsConfig
from relay.errors import ConfigError


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "sources": [{"name": "east", "bootstrap_servers": "east:9092"}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "dr:9092"},
        **extra,
    }


def config_error(tree: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(tree)
    return info.value


def test_group_offsets_is_off_unless_groups_are_named() -> None:
    """Without the section, or with no groups, nothing is synced in the background."""
    assert parse_config(minimal()).group_offsets is None
    assert parse_config(minimal(group_offsets={"interval": "10s"})).group_offsets is None


def test_group_offsets_reads_patterns_and_interval() -> None:
    """Patterns are kept as written; the interval defaults to 30 s."""
    config = parse_config(minimal(group_offsets={"groups": ["orders-.*", "billing"]}))
    assert config.group_offsets == GroupOffsetsConfig(("orders-.*", "billing"), 30.0)
    assert parse_config(minimal(group_offsets={"groups": ["a"], "interval": "5s"})).group_offsets == (
        GroupOffsetsConfig(("a",), 5.0)
    )


@pytest.mark.parametrize(
    ("section", "path", "says"),
    [
        ({"groups": ["orders-("]}, "group_offsets.groups[0]", "not a regular expression"),
        ({"groups": "orders"}, "group_offsets.groups", "expected a list"),
        ({"groups": [""]}, "group_offsets.groups[0]", "non-empty string"),
        ({"groups": ["a"], "interval": "0s"}, "group_offsets.interval", "greater than zero"),
        ({"groups": ["a"], "every": "1s"}, "group_offsets.every", "unknown key"),
    ],
)
def test_group_offsets_errors_name_the_key(section: dict[str, Any], path: str, says: str) -> None:
    """A bad pattern, list or interval is one error naming its key path."""
    error = config_error(minimal(group_offsets=section))
    assert error.path == path and says in error.message


def test_group_offsets_needs_a_preserved_topic() -> None:
    """Without partition: preserve there is no per-partition map to translate with: refused, saying why."""
    tree = minimal(group_offsets={"groups": ["a"]})
    tree["topics"] = [{"source": "orders", "partition": "key"}]
    error = config_error(tree)
    assert error.path == "group_offsets" and "preserve" in error.message


def test_group_offsets_needs_a_builtin_target() -> None:
    """A custom target keeps no offset map: refused."""
    tree = minimal(group_offsets={"groups": ["a"]})
    tree["target"] = {"type": "examples.jsonl_target:JsonlTarget", "options": {"path": "/tmp/x"}}
    assert config_error(tree).path == "group_offsets"


def test_offsets_commands_parse() -> None:
    """offsets translate takes --json, offsets sync --dry-run; both need --config and --group."""
    parser = build_parser()
    args = parser.parse_args(["offsets", "translate", "--config", "r.yml", "--group", "g", "--json"])
    assert (args.group, args.json, args.source) == ("g", True, None)
    args = parser.parse_args(["offsets", "sync", "--config", "r.yml", "--group", "g", "--dry-run", "--source", "east"])
    assert (args.dry_run, args.source) == (True, "east")
    with pytest.raises(SystemExit):
        parser.parse_args(["offsets", "sync", "--config", "r.yml"])


def test_offsets_without_a_preserved_topic_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No preserved topic: one line naming the reason, exit 2, before any cluster is contacted."""
    tree = minimal()
    tree["topics"] = [{"source": "orders", "partition": "key"}]
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["offsets", "translate", "--config", str(path), "--group", "g"]) == 2
    assert "partition: preserve" in capsys.readouterr().err


def test_offsets_with_an_unknown_source_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--source must name a source of the config."""
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(minimal()))
    assert main(["offsets", "sync", "--config", str(path), "--group", "g", "--source", "west"]) == 2
    assert "'west'" in capsys.readouterr().err
