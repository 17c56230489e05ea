"""``python -m kafka_lfs_relay``: the same as the ``kafka-lfs-relay`` command."""

import sys

from kafka_lfs_relay.cli import main

sys.exit(main())
