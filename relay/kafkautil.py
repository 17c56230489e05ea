"""Small adapters over confluent-kafka types shared by sources, targets and the tail scan."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Message as KafkaMessage

from relay.message import Headers


def headers_of(msg: KafkaMessage) -> Headers:
    """A consumed record's headers as a tuple of (name, value); consumed headers are always a list."""
    raw = msg.headers()
    if not raw:
        return ()
    return tuple(cast(list[tuple[str, bytes | None]], raw))
