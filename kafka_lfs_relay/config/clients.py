"""Every librdkafka property and the S3 client settings, checked when the config is loaded.

librdkafka checks its properties only when a client is created, and the relay creates most of
its clients after it has started: a typo such as ``security.protocol: SASL_SSLX`` used to end a
run as an internal error. :func:`check_clients` creates each client the relay will create, from
the config merged exactly the way the relay merges it (the same functions build the properties),
and drops it at once:

* each source: the consumer that reads it and the admin client of its health checks;
* the target of a built-in type: the transactional producer, the admin client that prepares
  topics, and the consumer that reads the positions topic back.

Nothing connects. Without ``bootstrap.servers`` librdkafka starts no broker connection; what it
does on creation is local: it checks every property and their combinations, loads the SSL
context (so an unreadable ``ssl.ca.location`` is found here) and looks up the SASL mechanism in
its build. One exception: with ``sasl.oauthbearer.method: oidc`` it fetches a token from the
token endpoint on creation; the check hands it a dummy token through ``oauth_cb`` instead
(confluent-kafka then waits for the token in steps of one second, so those clients are checked
in parallel). A property one kind of client ignores ("... is a consumer property and will be
ignored by this producer instance") is a librdkafka warning, not an error: it passes.

A refused property is a :class:`ConfigError` naming its key path (``sources[0].kafka.<name>``,
``target.kafka.<name>``), the client and librdkafka's reason. librdkafka names a property by its
canonical name (``queue.buffering.max.ms`` for ``linger.ms``) or not at all (two properties that
contradict each other), so the property to blame is found by asking again without each of the
user's properties in turn.

The S3 client of the ``lfs`` and ``hydrate`` targets is built the same way, with placeholder
credentials so that boto3 does not look for any (its chain may ask an instance metadata
service): a malformed ``endpoint_url`` or ``region`` is reported by key.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from kafka_lfs_relay.config.model import RelayConfig
from lfs.s3 import S3Settings, make_client
from relay.errors import REDACTED, ConfigError, is_secret_path
from relay.settings import ClusterConfig, RelaySettings
from relay.sourcepool import probe_config, reader_config
from targets.hydrate import HydrateTargetConfig
from targets.kafka import positions, sender
from targets.lfs import LfsTargetConfig

Kind = Literal["producer", "consumer", "admin"]

_FAILED_TO_CREATE: Final = re.compile(r"^Failed to create (?:producer|consumer|admin client): ")
_BARE: Final = re.compile(r"[-+0-9.eE]+|true|false", re.IGNORECASE)


@dataclass(frozen=True)
class _Client:
    """One client the relay makes: whose properties (``where``), what it is, how its properties are merged."""

    where: str
    role: str
    kind: Kind
    cluster: ClusterConfig
    merge: Callable[[ClusterConfig], dict[str, Any]]

    def conf(self, props: Mapping[str, str]) -> dict[str, Any]:
        """The client's properties with the cluster's own replaced by ``props``, without bootstrap servers."""
        conf = self.merge(dataclasses.replace(self.cluster, kafka=dict(props), oauth=None))
        conf.pop("bootstrap.servers", None)
        if self.cluster.oauth is not None:
            # The relay's own token provider (sasl_oauth) would sign a real token when the client
            # is made; the check is about properties, so it gets a placeholder token instead.
            conf["oauth_cb"] = _placeholder_token
        return conf


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("kafka_lfs_relay.config.clients")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


def _placeholder_token(_config: str) -> tuple[str, float]:
    return "kafka-lfs-relay-config-check", time.time() + 300


def _fetches_a_token(conf: Mapping[str, Any]) -> bool:
    mechanism = str(conf.get("sasl.mechanism", conf.get("sasl.mechanisms", ""))).upper()
    return mechanism == "OAUTHBEARER" and str(conf.get("sasl.oauthbearer.method", "")).lower() == "oidc"


def _refusal(kind: Kind, conf: Mapping[str, Any]) -> str | None:
    """librdkafka's (or confluent-kafka's) reason for refusing to create this client, or None."""
    conf = {**conf, "logger": _quiet_logger()}
    if _fetches_a_token(conf) and "oauth_cb" not in conf:
        conf["oauth_cb"] = _placeholder_token
    try:
        if kind == "consumer":
            Consumer(conf).close()
        elif kind == "producer":
            Producer(conf)
        else:
            AdminClient(conf)
    except KafkaException as exc:
        error: Any = exc.args[0] if exc.args else None
        text = error.str() if error is not None and hasattr(error, "str") else str(exc)
        return " ".join(_FAILED_TO_CREATE.sub("", text).split())
    except (TypeError, ValueError, AttributeError) as exc:  # confluent-kafka's own checks (error_cb, ...)
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _without(props: Mapping[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in props.items() if k != key}


def _mentions(reason: str, word: str) -> bool:
    """Whether ``word`` stands in ``reason`` on its own, not as part of a longer name."""
    return bool(word) and re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", reason) is not None


def _blame(client: _Client, reason: str) -> str | None:
    """The user's property that makes librdkafka refuse ``client``, or None if none of them does.

    In order: a property the reason names; one whose removal lets the client be created (or
    changes the reason) and whose value the reason quotes; another one whose value the reason
    quotes (``sasl.mechanism: GSSAPI``, though without it librdkafka's default is GSSAPI too),
    unless that value is a bare number or boolean, which a reason may contain by chance; the first
    one whose removal lets the client be created.
    """
    props = dict(client.cluster.kafka)
    named = [key for key in props if _mentions(reason, key)]
    if named:
        return min(named, key=lambda key: reason.index(key))
    fixes = [key for key in props if _refusal(client.kind, client.conf(_without(props, key))) != reason]
    quoted = [key for key in props if _mentions(reason, props[key])]
    for key in quoted:
        if key in fixes:
            return key
    for key in quoted:
        if not _BARE.fullmatch(props[key]):
            return key
    return fixes[0] if fixes else None


def _refused(client: _Client, reason: str) -> ConfigError:
    key = _blame(client, reason)
    if key is None:
        # None of the cluster's own properties: one the relay derives from another setting
        # (group.session_timeout, target.transaction_timeout, ...) is out of librdkafka's range.
        return ConfigError(
            client.where, f"librdkafka refuses {client.role} the relay builds from this config: {reason}"
        )
    path = f"{client.where}.kafka.{key}"
    value = client.cluster.kafka[key]
    # The value is shown once: in librdkafka's reason if it quotes it, else after it (a secret as
    # '***'); never for a property librdkafka does not know (it may be a misspelled secret).
    shown = bool(value) and value in reason
    if shown and is_secret_path(path):
        reason = reason.replace(value, REDACTED)
    message = f"librdkafka refuses it for {client.role}: {reason}"
    if shown or reason.startswith("No such configuration property"):
        return ConfigError(path, message)
    return ConfigError(path, message, value)


def _clients(config: RelayConfig) -> list[_Client]:
    queue_bytes = RelaySettings(config.topics, config.max_in_flight).queue_bytes
    timeout = config.source_pool.request_timeout
    found: list[_Client] = []
    for i, source in enumerate(config.sources):
        where = f"sources[{i}]"
        found += [
            _Client(
                where,
                f"the consumer of source {source.name}",
                "consumer",
                source,
                lambda c: reader_config(c, queue_bytes, config.group),
            ),
            _Client(
                where, f"the admin client of source {source.name}", "admin", source, lambda c: probe_config(c, timeout)
            ),
        ]
    kafka = config.target.kafka
    if kafka is not None:
        txn_id = kafka.transactional_id or config.name
        found += [
            _Client(
                "target",
                "the target's transactional producer",
                "producer",
                kafka.cluster,
                lambda c: sender.producer_config(c, txn_id, kafka.transaction_timeout),
            ),
            _Client("target", "the target's admin client", "admin", kafka.cluster, ClusterConfig.client_config),
            _Client(
                "target",
                "the consumer that reads the positions topic",
                "consumer",
                kafka.cluster,
                positions.reader_config,
            ),
        ]
    return found


def _s3(config: RelayConfig) -> list[tuple[str, S3Settings]]:
    settings = config.target.settings
    if isinstance(settings, LfsTargetConfig):
        rehome = settings.lfs.rehome
        return [("target.lfs.s3", settings.lfs.s3), *([("target.lfs.rehome.s3", rehome.s3)] if rehome else [])]
    if isinstance(settings, HydrateTargetConfig):
        return [("target.hydrate.s3", settings.hydrate.s3)]
    return []


def _s3_refusal(settings: S3Settings) -> str | None:
    placeholder = dataclasses.replace(
        settings, access_key_id="config-check", secret_access_key="config-check", session_token=None
    )
    try:
        make_client(placeholder)
    except Exception as exc:  # whatever boto3 refuses the settings with is the reason
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def check_s3_settings(section: str, settings: S3Settings) -> None:
    """Build the S3 client of ``settings`` (at key path ``section``) without connecting; raise what boto3 refuses."""
    reason = _s3_refusal(settings)
    if reason is None:
        return
    candidates = (
        ("endpoint_url", settings.endpoint_url, dataclasses.replace(settings, endpoint_url=None)),
        ("region", settings.region, dataclasses.replace(settings, region=None)),
    )
    for field, value, without in candidates:
        if value is not None and _s3_refusal(without) is None:
            raise ConfigError(f"{section}.{field}", f"boto3 refuses it: {reason}", value)
    raise ConfigError(section, f"boto3 refuses these settings: {reason}")


def check_clients(config: RelayConfig) -> None:
    """Create every librdkafka client and the S3 client the relay will create, without connecting.

    Raises :class:`ConfigError` naming the first property refused (in the order sources, then
    target) and the reason.
    """
    clients = _clients(config)
    with ThreadPoolExecutor(max_workers=max(1, len(clients)), thread_name_prefix="config-check") as pool:
        reasons = list(pool.map(lambda c: _refusal(c.kind, c.conf(c.cluster.kafka)), clients))
    for client, reason in zip(clients, reasons, strict=True):
        if reason is not None:
            raise _refused(client, reason)
    for section, settings in _s3(config):
        check_s3_settings(section, settings)
