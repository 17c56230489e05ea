"""Small adapters over confluent-kafka types shared by sources, targets and the tail scan."""

from __future__ import annotations

import re
from typing import cast

from confluent_kafka import Message as KafkaMessage

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
