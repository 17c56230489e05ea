"""The target registry: every built-in target type, in one place.

Config validation, ``check`` and the wiring all read :data:`TARGETS`. Adding a built-in target is
one module under ``targets/`` (with a ``parse`` and a ``build``) and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from relay.metrics import RelayMetrics
from relay.options import Section
from targets import hydrate, kafka, lfs
from targets.context import TargetContext


@dataclass(frozen=True)
class TargetType:
    """A built-in target type: its own sub-section of ``target`` (if any), its parser and its factory.

    ``parse`` reads every key of the ``target`` section the type uses (the registry's caller
    finishes the section, so an unknown key is an error); ``build`` makes the target from what
    ``parse`` returned. ``kafka_of`` gives the Kafka target's part of those settings (every
    built-in type writes to the ``target`` cluster through the Kafka target). ``same_records`` says
    whether a target record is its source record byte for byte (then a target topic the relay
    creates takes the source topic's ``max.message.bytes`` and ``retention.bytes``; for ``lfs``
    and ``hydrate`` it does not: envelopes stand for payloads, or the reverse).
    """

    section: str | None
    parse: Callable[[Section, TargetContext], Any]
    build: Callable[[Any, TargetContext, RelayMetrics], kafka.KafkaTarget]
    kafka_of: Callable[[Any], kafka.KafkaTargetConfig] = attrgetter("kafka")
    same_records: bool = False


def _kafka(config: kafka.KafkaTargetConfig, context: TargetContext, metrics: RelayMetrics) -> kafka.KafkaTarget:
    return kafka.build(config, context, metrics)


TARGETS: Mapping[str, TargetType] = MappingProxyType(
    {
        "kafka": TargetType(None, kafka.parse, _kafka, kafka_of=lambda settings: settings, same_records=True),
        "lfs": TargetType("lfs", lfs.parse, lfs.build),
        "hydrate": TargetType("hydrate", hydrate.parse, hydrate.build),
    }
)
"""Built-in target types by name; any other ``target.type`` is a ``package.module:Class``."""

CUSTOM_SECTION = "options"
"""The sub-section of ``target`` a custom target class is built with."""

SECTIONS: tuple[str, ...] = (*(t.section for t in TARGETS.values() if t.section), CUSTOM_SECTION)
"""Every sub-section of ``target`` that belongs to one type."""
