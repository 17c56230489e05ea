"""``kafka-lfs-relay verify``: prove a mirror complete, record by record.

For every source partition of the relay's topics (``partition: preserve``), the relayed range is
read on a source cluster and on the target, paired through the relay's positions and offset map
(:mod:`~kafka_lfs_relay.verify.plan`), fingerprinted as the target type promises them
(:mod:`~kafka_lfs_relay.verify.values`) and aligned (:mod:`~kafka_lfs_relay.verify.align`): one line
per partition says how many records were compared, missing, extra and different, with the first
offset of each; the exit code is 1 on any difference.
"""

from kafka_lfs_relay.verify.command import add_parser, cmd_verify

__all__ = ["add_parser", "cmd_verify"]
