"""Small adapters over confluent-kafka types shared by sources, targets and the tail scan."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final, cast

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from relay.message import Headers


def headers_of(msg: KafkaMessage) -> Headers:
    """A consumed record's headers as a tuple of (name, value); consumed headers are always a list."""
    raw = msg.headers()
    if not raw:
        return ()
    # A string cast: subscripting list[...] at run time built a new alias object per record.
    return tuple(cast("list[tuple[str, bytes | None]]", raw))


_BROKER_PREFIX = re.compile(r"^\w+://[^ ]+?/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)$")


def client_error_text(text: str) -> str:
    """librdkafka's error text without the broker URL prefix and the timing suffix."""
    return _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", text))


RETRIABLE: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_CONTROLLER,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.CONCURRENT_TRANSACTIONS,
    }
)
"""Errors a broker or the client answers while a cluster is away or moving things around (a leader
elected, a coordinator loading): asking again later can succeed. librdkafka flags some of them as
retriable itself, but not those it hands back inside admin results (a partition's ``Not leader``)."""


def retriable(err: KafkaError) -> bool:
    """Whether asking again later can succeed (see :data:`RETRIABLE`)."""
    return bool(err.retriable()) or err.code() in RETRIABLE


class OffsetsError(KafkaException):
    """A partition whose offsets could not be listed: ``where`` names it, ``args[0]`` is the client's error."""

    def __init__(self, where: str, error: KafkaError) -> None:
        super().__init__(error)
        self.where = where


def list_offsets(
    admin: AdminClient,
    partitions: Collection[tuple[str, int]],
    spec: Any,
    isolation: IsolationLevel,
    timeout: float,
) -> dict[tuple[str, int], int]:
    """The offset ``spec`` (an ``OffsetSpec``) gives for each (topic, partition), in one request.

    Raises :class:`OffsetsError` naming the first partition that could not be answered.
    """
    request = {TopicPartition(t, p): spec for t, p in partitions}
    futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=timeout)
    out: dict[tuple[str, int], int] = {}
    for tp, fut in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(fut.result(timeout=timeout).offset)
        except KafkaException as exc:
            raise OffsetsError(f"{tp.topic}/{tp.partition}", exc.args[0]) from None
    return out
