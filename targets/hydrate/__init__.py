"""The hydrating target (``type: hydrate``): envelope records become the plain records they stand for.

Its parts: :mod:`~targets.hydrate.config` (settings), :mod:`~targets.hydrate.window` (the payload
window bounding memory) and :mod:`~targets.hydrate.target` (the target, composing the Kafka target).
"""

from targets.hydrate.config import HydrateConfig, HydrateTargetConfig, parse
from targets.hydrate.target import HydrateTarget, build

__all__ = ["HydrateConfig", "HydrateTarget", "HydrateTargetConfig", "build", "parse"]
