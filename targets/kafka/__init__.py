"""The Kafka target (``type: kafka``): one transaction per batch, exact resume positions in the target.

:func:`parse` reads its part of the ``target`` section, :func:`build` makes it; the ``lfs`` and
``hydrate`` targets compose it through :class:`Hooks`.
"""

from targets.kafka.settings import BatchConfig, KafkaTargetConfig
from targets.kafka.settings import parse_kafka_target as parse
from targets.kafka.target import Hooks, KafkaTarget, build

__all__ = ["BatchConfig", "Hooks", "KafkaTarget", "KafkaTargetConfig", "build", "parse"]
