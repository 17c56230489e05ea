"""The hydrating target (``type: hydrate``): envelope records become the plain records they stand for.

Its parts: :mod:`~targets.hydrate.config` (settings), :mod:`~targets.hydrate.window` (the payload
window bounding memory) and :mod:`~targets.hydrate.target` (hydration: the Kafka target's transform).
"""

from targets.hydrate.config import HydrateConfig, HydrateTargetConfig, parse
from targets.hydrate.target import Hydrate, build

__all__ = ["Hydrate", "HydrateConfig", "HydrateTargetConfig", "build", "parse"]
