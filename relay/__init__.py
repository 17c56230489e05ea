"""kafka-lfs-relay: relay Kafka records between clusters, with source failover and S3 claim-check offload."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kafka-lfs-relay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
