"""The offloading target (``type: lfs``): large values go to S3, a ``kfs_lfs`` envelope goes to Kafka.

Its parts: :mod:`~targets.lfs.config` (settings and the pure decisions), :mod:`~targets.lfs.upload`
(S3 uploads) and :mod:`~targets.lfs.target` (the offload: the Kafka target's transform).
"""

from targets.lfs.config import LfsConfig, LfsTargetConfig, parse
from targets.lfs.target import Offload, build

__all__ = ["LfsConfig", "LfsTargetConfig", "Offload", "build", "parse"]
