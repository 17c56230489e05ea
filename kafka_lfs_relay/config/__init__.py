"""The config file: YAML with ``${VAR}`` references, validated into one immutable :class:`RelayConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kafka_lfs_relay.config.clients import check_clients
from kafka_lfs_relay.config.env import join_index, join_key, load_yaml, secret_values, substitute_env
from kafka_lfs_relay.config.model import FilterConfig, LogConfig, RelayConfig, TargetConfig, parse_config, validate
from relay.errors import SecretMasker


def load_config(path: Path, env: Mapping[str, str] | None = None, masker: SecretMasker | None = None) -> RelayConfig:
    """Read, substitute ``${VAR}`` and validate a YAML config file, then check every librdkafka
    property and the S3 client settings by creating the clients without connecting (:func:`check_clients`).

    ``masker``, if given, learns every secret of the file before anything is validated (the values
    under secret keys and the secret ``${VAR}`` values, see :func:`substitute_env`), so that any
    error, even one about the file itself, can be printed through it.
    """
    raw = load_yaml(path)
    secrets = secret_values(raw)
    try:
        tree = substitute_env(raw, os.environ if env is None else env, secrets=secrets)
        secrets |= secret_values(tree)
    finally:
        if masker is not None:
            for secret in secrets:
                masker.add(secret)
    config = parse_config(tree)
    check_clients(config)
    return config


__all__ = [
    "FilterConfig",
    "LogConfig",
    "RelayConfig",
    "TargetConfig",
    "check_clients",
    "join_index",
    "join_key",
    "load_config",
    "load_yaml",
    "parse_config",
    "secret_values",
    "substitute_env",
    "validate",
]
