"""Reading an options mapping: typed, by key path, and every key read once or it is an error.

This is how the application reads its config file and how built-in targets read their own
option sections (``target.lfs``, ``target.hydrate``): one :class:`Section` per mapping.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

from relay.errors import ConfigError
from relay.oauth import PROVIDERS, SIGNER_PACKAGE, OAuthSettings, signer_installed
from relay.settings import Backoff, ClusterConfig, is_topic_name
from relay.units import parse_duration, parse_size

T = TypeVar("T")
_MISSING = object()
_INTEGER = re.compile(r"[-+]?[0-9]+", re.ASCII)
_BOOLEANS = {"true": True, "false": False}


class EnvText(str):
    """A config string that ``${VAR}`` substitution produced.

    YAML typed every other value when the file was read; an environment variable is always text.
    A reader that wants a number or a boolean therefore parses an ``EnvText`` (``"20000"``,
    ``"false"``) as YAML would have typed the same text written in the file, and refuses anything
    else with the key's usual message. Sizes and durations read text already. A plain string in
    the file stays a string: ``max_records: "20000"`` is still refused, as quoting it asks.
    """


def env_integer(value: object) -> object:
    """``value`` as an int when it is ``EnvText`` holding a whole number, else unchanged."""
    if isinstance(value, EnvText) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return value


def env_flag(value: object) -> object:
    """``value`` as a bool when it is ``EnvText`` holding true or false (any case), else unchanged."""
    if isinstance(value, EnvText):
        return _BOOLEANS.get(value.strip().lower(), value)
    return value


class Section:
    """Reads keys from one mapping of the config, tracking which were read.

    ``finish`` rejects every key that no reader asked for, so a misspelled key is an error that
    names it (and its likely intended spelling) instead of a setting silently ignored.
    """

    def __init__(self, data: object, path: str, asked: set[str] | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {type(data).__name__}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(path or "(top level)", f"keys must be strings, got {key!r}")
        self._data: Mapping[str, object] = data
        self.path = path
        self._seen: set[str] = set()
        # Every key path any reader asked for, present or not: lets a test prove that the
        # documented example config shows every key the parser knows.
        self.asked = asked if asked is not None else set()

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` in this section."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """True if the key is present (with any value, null included)."""
        return key in self._data

    def raw(self, key: str, default: object = _MISSING) -> object:
        """The value as loaded, or ``default``; a missing key without default is an error."""
        self._seen.add(key)
        self.asked.add(self.key_path(key))
        if key in self._data and self._data[key] is not None:
            return self._data[key]
        if default is _MISSING:
            raise ConfigError(self.key_path(key), "is required")
        return default

    def text(self, key: str, default: object = _MISSING) -> str:
        """A non-empty string."""
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(self.key_path(key), "expected a string", value)
        text = str(value).strip()
        if not text:
            raise ConfigError(self.key_path(key), "must not be empty", value)
        return text

    def opt_text(self, key: str) -> str | None:
        """A string, or None when absent."""
        return None if self.raw(key, None) is None else self.text(key)

    def flag(self, key: str, default: bool) -> bool:
        """A YAML boolean (or ``${VAR}`` text that is true or false)."""
        value = env_flag(self.raw(key, default))
        if not isinstance(value, bool):
            raise ConfigError(self.key_path(key), "expected true or false", value)
        return value

    def integer(self, key: str, default: object = _MISSING, minimum: int | None = None) -> int:
        """An integer (or ``${VAR}`` text that is one), at least ``minimum``."""
        value = env_integer(self.raw(key, default))
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key_path(key), "expected a whole number", value)
        if minimum is not None and value < minimum:
            raise ConfigError(self.key_path(key), f"must be at least {minimum}", value)
        return value

    def duration(self, key: str, default: object = _MISSING, positive: bool = False) -> float:
        """A duration in seconds (``500ms``, ``2s``, ``1m``)."""
        value = parse_duration(self.raw(key, default), self.key_path(key))
        if positive and value <= 0:
            raise ConfigError(self.key_path(key), "must be greater than zero", self.raw(key, default))
        return value

    def size(self, key: str, default: object = _MISSING, positive: bool = False) -> int:
        """A size in bytes (``16MiB``, ``512KiB``)."""
        value = parse_size(self.raw(key, default), self.key_path(key))
        if positive and value <= 0:
            raise ConfigError(self.key_path(key), "must be greater than zero", self.raw(key, default))
        return value

    def topic(self, key: str, default: object = _MISSING) -> str:
        """A legal Kafka topic name."""
        name = self.text(key, default)
        if not is_topic_name(name):
            raise ConfigError(self.key_path(key), "is not a legal Kafka topic name", name)
        return name

    def opt_topic(self, key: str) -> str | None:
        """A legal Kafka topic name, or None when absent."""
        return None if self.raw(key, None) is None else self.topic(key)

    def choice(self, key: str, choices: Sequence[str], default: object = _MISSING) -> str:
        """One of ``choices``."""
        value = self.raw(key, default)
        if value not in choices:
            raise ConfigError(self.key_path(key), f"expected one of {', '.join(choices)}", value)
        return str(value)

    def strings(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        """A list of non-empty strings."""
        value = self.raw(key, list(default))
        if not isinstance(value, list):
            raise ConfigError(self.key_path(key), "expected a list", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"{self.key_path(key)}[{i}]", "expected a non-empty string", item)
        return tuple(item.strip() for item in value)

    def section(self, key: str) -> Section:
        """The nested mapping under ``key`` (an absent key reads as an empty mapping)."""
        return Section(self.raw(key, None), self.key_path(key), self.asked)

    def sections(self, key: str, required: bool = False) -> Iterator[Section]:
        """Each mapping in the list under ``key``."""
        value = self.raw(key, _MISSING if required else [])
        if not isinstance(value, list):
            raise ConfigError(self.key_path(key), "expected a list", value)
        if required and not value:
            raise ConfigError(self.key_path(key), "needs at least one entry")
        for i, item in enumerate(value):
            yield Section(item, f"{self.key_path(key)}[{i}]", self.asked)

    def string_map(self, key: str) -> dict[str, str]:
        """A flat mapping of string keys to scalar values, rendered as strings (librdkafka style)."""
        section = self.section(key)
        out: dict[str, str] = {}
        for k, v in section._data.items():
            section._seen.add(k)
            if isinstance(v, bool):
                out[k] = "true" if v else "false"
            elif isinstance(v, (str, int, float)):
                out[k] = str(v)
            else:
                raise ConfigError(section.key_path(k), "expected a string, number or boolean", v)
        return out

    def mapping(self, key: str) -> Mapping[str, object]:
        """The raw mapping under ``key``, validated later by whoever owns it (a plugin's own config)."""
        section = self.section(key)
        section._seen.update(section._data)
        return dict(section._data)

    def finish(self) -> None:
        """Reject keys nobody read."""
        for key in self._data:
            if key not in self._seen:
                hint = difflib.get_close_matches(key, list(self._seen), n=1)
                extra = f"; did you mean '{hint[0]}'?" if hint else ""
                raise ConfigError(self.key_path(key), f"unknown key{extra}")


def read_cluster(sec: Section, default_name: str) -> ClusterConfig:
    """``name``, ``bootstrap_servers``, ``kafka`` (librdkafka properties) and ``sasl_oauth`` of a cluster entry."""
    cluster = ClusterConfig(
        name=sec.text("name", default_name),
        bootstrap_servers=sec.text("bootstrap_servers"),
        kafka=sec.string_map("kafka"),
        oauth=read_oauth(sec.section("sasl_oauth")) if sec.has("sasl_oauth") else None,
        id=sec.opt_text("id"),
    )
    if cluster.id is not None and not re.fullmatch(r"[A-Za-z0-9._:-]{1,200}", cluster.id):
        raise ConfigError(sec.key_path("id"), "expected letters, digits, '.', '_', ':' or '-'", cluster.id)
    if "bootstrap.servers" in cluster.kafka:
        raise ConfigError(sec.key_path("kafka.bootstrap.servers"), "set bootstrap_servers instead")
    if cluster.oauth is not None and cluster.kafka.get("sasl.mechanism", "").upper() != "OAUTHBEARER":
        raise ConfigError(sec.key_path("sasl_oauth"), "needs kafka: {sasl.mechanism: OAUTHBEARER}")
    return cluster


def read_oauth(sec: Section) -> OAuthSettings:
    """A ``sasl_oauth`` section: the provider of the cluster's OAUTHBEARER tokens (see :mod:`relay.oauth`)."""
    provider = sec.choice("provider", PROVIDERS)
    if not signer_installed():
        raise ConfigError(
            sec.key_path("provider"),
            f"{provider} needs the package {SIGNER_PACKAGE}: pip install 'kafka-lfs-relay[msk-iam]'",
            provider,
        )
    role_arn = sec.opt_text("role_arn")
    if role_arn is not None and not role_arn.startswith("arn:"):
        raise ConfigError(
            sec.key_path("role_arn"), "expected a role ARN like arn:aws:iam::123456789012:role/relay", role_arn
        )
    settings = OAuthSettings(
        provider=provider,
        region=sec.text("region"),
        role_arn=role_arn,
        session_name=sec.text("session_name", OAuthSettings.session_name),
    )
    sec.finish()
    return settings


def read_backoff(sec: Section, default: Backoff) -> Backoff:
    """A ``backoff: {min, max}`` section (durations, ``min <= max``)."""
    low = sec.duration("min", default.min, positive=True)
    high = sec.duration("max", default.max, positive=True)
    if high < low:
        raise ConfigError(sec.key_path("max"), f"must not be less than {sec.key_path('min')}", sec.raw("max"))
    sec.finish()
    return Backoff(low, high)
