"""The config file: YAML with ``${VAR}`` references, validated into one immutable :class:`RelayConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kafka_lfs_relay.config.env import join_index, join_key, load_yaml, substitute_env
from kafka_lfs_relay.config.model import FilterConfig, LogConfig, RelayConfig, TargetConfig, parse_config, validate


def load_config(path: Path, env: Mapping[str, str] | None = None) -> RelayConfig:
    """Read, substitute ``${VAR}`` and validate a YAML config file."""
    tree = substitute_env(load_yaml(path), os.environ if env is None else env)
    return parse_config(tree)


__all__ = [
    "FilterConfig",
    "LogConfig",
    "RelayConfig",
    "TargetConfig",
    "join_index",
    "join_key",
    "load_config",
    "load_yaml",
    "parse_config",
    "substitute_env",
    "validate",
]
