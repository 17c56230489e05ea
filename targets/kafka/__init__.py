"""The Kafka target (``type: kafka``): one transaction per batch, exact resume positions in the target.

:func:`parse` reads its part of the ``target`` section, :func:`build` makes it; the ``lfs`` and
``hydrate`` targets build it with a :class:`Transform` of their own.
"""

from targets.kafka.settings import BatchConfig, KafkaTargetConfig
from targets.kafka.settings import parse_kafka_target as parse
from targets.kafka.target import KafkaTarget, build
from targets.kafka.transform import Transform

__all__ = ["BatchConfig", "KafkaTarget", "KafkaTargetConfig", "Transform", "build", "parse"]
