"""Configuration: loading, units and the validated model."""

from relay.config.env import join_index, join_key, load_yaml, substitute_env
from relay.config.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "format_duration",
    "format_size",
    "join_index",
    "join_key",
    "load_yaml",
    "parse_duration",
    "parse_size",
    "substitute_env",
]
