"""Provenance headers: the clusters a record has been in, so that relays mirroring both ways never loop it.

With ``provenance: {enabled: true}`` the Kafka target adds to every record it writes one header
``kfr-provenance`` whose value is the id of the source cluster the record was read from (a
cluster's ``id`` in the config, or else the cluster id Kafka reports). A record read with a
``kfr-provenance`` header naming the target cluster has been there already: the relay drops it,
as a filter would (counted as filter ``provenance``), and its position moves on. Headers added
by earlier relays stay, so a record carries one header per cluster it went through.

The header is only ever used to drop a record that would loop; positions never come from it
(anyone can write a header).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import structlog
from confluent_kafka import KafkaException
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from relay.kafkautil import client_error_text
from relay.logs import librdkafka_logger
from relay.message import Message
from relay.settings import ClusterConfig
from relay.target import TargetError

log = structlog.get_logger("kafka_lfs_relay.target")

HEADER: Final = "kfr-provenance"

Stamp = list[tuple[str, bytes | str | None]]
"""The header list added to a record read from one source cluster."""


def cluster_id(cluster: ClusterConfig, timeout: float) -> str:
    """``cluster``'s configured ``id``, or the cluster id Kafka reports; raises :class:`KafkaException`."""
    if cluster.id is not None:
        return cluster.id
    conf: dict[str, Any] = {**cluster.client_config(), "logger": librdkafka_logger()}
    found = AdminClient(conf).list_topics(timeout=timeout).cluster_id
    if not found:
        raise ValueError("the cluster reported no id")
    return str(found)


class Provenance:
    """The target's provenance tag and a stamp per source cluster, resolved once each on the relay's thread.

    ``stamps`` is read by the sender's thread: a cluster's stamp is in it before any run read from
    that cluster is handed to the target.
    """

    def __init__(self, target: ClusterConfig, sources: Sequence[ClusterConfig], timeout: float = 15.0) -> None:
        self._target = target
        self._sources = {s.name: s for s in sources}
        self._timeout = timeout
        self.tag: tuple[str, bytes] | None = None
        self.stamps: dict[str, Stamp] = {}

    def ready(self) -> None:
        """Resolve the target cluster's id (at start-up, before anything is read)."""
        if self.tag is not None:
            return
        try:
            target_id = cluster_id(self._target, self._timeout)
        except (KafkaException, ValueError) as exc:
            raise TargetError(
                f"target {self._target.name}: provenance: cannot read the cluster id ({_why(exc)}); set target.id"
            ) from None
        self.tag = (HEADER, target_id.encode())
        log.info("provenance: records read with this cluster in their provenance are not written", target_id=target_id)

    def stamp(self, source: str) -> Stamp:
        """The header added to records read from source cluster ``source`` (resolved on first use)."""
        stamp = self.stamps.get(source)
        if stamp is None:
            cluster = self._sources[source]
            try:
                source_id = cluster_id(cluster, self._timeout)
            except (KafkaException, ValueError) as exc:
                raise TargetError(
                    f"source {source}: provenance: cannot read the cluster id ({_why(exc)}); set its id"
                ) from None
            stamp = self.stamps[source] = [(HEADER, source_id.encode())]
            log.info("provenance: records read from this source are stamped", source=source, source_id=source_id)
        return stamp


def _why(exc: Exception) -> str:
    return client_error_text(exc.args[0].str()) if isinstance(exc, KafkaException) else str(exc)


class LoopGuard:
    """A filter that drops a record whose provenance names the target cluster (it has been there)."""

    def __init__(self, provenance: Provenance) -> None:
        self._provenance = provenance

    def __call__(self, message: Message) -> bool:
        return self._provenance.tag not in message.headers

    def keep_consumed(self, record: KafkaMessage) -> bool:
        headers = record.headers()
        return headers is None or self._provenance.tag not in headers
