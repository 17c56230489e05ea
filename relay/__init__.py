"""kafka-lfs-relay: relay Kafka records between clusters, with source failover and S3 claim-check offload."""

__version__ = "0.3.0"
"""The one version source: pyproject.toml reads it (``[tool.setuptools.dynamic]``), and so do
``kafka-lfs-relay --version`` and the ``kafka_lfs_relay_build_info`` metric. CHANGELOG.md says
what each version holds."""

__all__ = ["__version__"]
