"""``kafka-lfs-relay lfs gc``: the objects of an lfs relay that no envelope names, and never will again.

:mod:`~kafka_lfs_relay.lfsgc.keys` reads object keys back into source coordinates,
:mod:`~kafka_lfs_relay.lfsgc.census` holds the rules (pure), :mod:`~kafka_lfs_relay.lfsgc.scan` reads
Kafka and the bucket in the order the rules need, :mod:`~kafka_lfs_relay.lfsgc.metrics` leaves a
run's figures for Prometheus, :mod:`~kafka_lfs_relay.lfsgc.command` is the command line.
"""

from kafka_lfs_relay.lfsgc.command import add_parser, cmd_gc

__all__ = ["add_parser", "cmd_gc"]
