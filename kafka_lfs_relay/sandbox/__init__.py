"""The project's sandbox: real Apache Kafka (KRaft) clusters and a real S3 server on loopback.

The tests, the demo and the benchmarks all build on this one package, the relay's ``run`` command
as a child process included; nothing here is used by the relay itself.
"""

from kafka_lfs_relay.sandbox.distribution import KAFKA_VERSION, KafkaDistribution, kafka_distribution
from kafka_lfs_relay.sandbox.kafka import KafkaCluster
from kafka_lfs_relay.sandbox.process import SandboxError
from kafka_lfs_relay.sandbox.producer import FeedProducer
from kafka_lfs_relay.sandbox.relay import RelayProcess, cluster_entry, relay_argv, relay_env
from kafka_lfs_relay.sandbox.s3 import S3Server
from kafka_lfs_relay.sandbox.sandbox import Sandbox

__all__ = [
    "KAFKA_VERSION",
    "FeedProducer",
    "KafkaCluster",
    "KafkaDistribution",
    "RelayProcess",
    "S3Server",
    "Sandbox",
    "SandboxError",
    "cluster_entry",
    "kafka_distribution",
    "relay_argv",
    "relay_env",
]
