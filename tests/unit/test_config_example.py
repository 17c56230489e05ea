"""config.example.yml is valid and shows every key the config parser knows."""

from __future__ import annotations

import re
from pathlib import Path

from relay.app import TARGET_OPTION_KEYS
from relay.config.env import load_yaml, substitute_env
from relay.config.model import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"


def test_example_config_parses() -> None:
    """The example validates once its ${VAR} references are set."""
    config = parse_config(substitute_env(load_yaml(EXAMPLE), {"EAST_PASSWORD": "x"}), TARGET_OPTION_KEYS)
    assert config.mode == "failover" and [s.name for s in config.sources] == ["east", "west"]


def test_example_config_shows_every_key() -> None:
    """Every key the parser looks for appears in the example, so the documentation cannot drift."""
    asked: set[str] = set()
    parse_config(substitute_env(load_yaml(EXAMPLE), {"EAST_PASSWORD": "x"}), TARGET_OPTION_KEYS, asked)
    present: set[str] = set()

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                present.add(child)
                if key not in ("kafka", "config", "options"):
                    walk(value, child)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(load_yaml(EXAMPLE), "")

    def norm(paths: set[str]) -> set[str]:
        return {re.sub(r"\[\d+\]", "[]", p) for p in paths}

    target_options = {f"target.{k}" for k in TARGET_OPTION_KEYS}
    assert norm(asked) - norm(present) - target_options == set()
