"""The offloading target (``type: lfs``): large values go to S3, a ``kfs_lfs`` envelope goes to Kafka.

Its parts: :mod:`~targets.lfs.config` (settings and the pure decisions), :mod:`~targets.lfs.upload`
(S3 uploads) and :mod:`~targets.lfs.target` (the target, composing the Kafka target).
"""

from targets.lfs.config import LfsConfig, LfsTargetConfig, parse
from targets.lfs.target import LfsTarget, build

__all__ = ["LfsConfig", "LfsTarget", "LfsTargetConfig", "build", "parse"]
