"""Chaos soak: every use case at once on the sandbox, under random faults, checked record by record.

Workload (``workload.py``): a producer into ``mirror`` on east (1 KiB records and a share of 1-8 MiB
ones, keyed, with headers), a copier feeding the standby west with a random lag of 0-5 s, and a
producer into the 12-partition ``orders`` topic.

Relays (``relays.py``): ``mirror`` (failover east/west, ``type: lfs`` into ``dr``, large records
offloaded to S3), ``hydrate`` (the envelope topic on ``dr`` hydrated into ``plain``), and three
group instances sharing ``orders`` into ``plain``. A relay that exits is restarted like a service.

Nemesis (``nemesis.py``): a seeded random fault every few seconds, overlapping, logged to
``faults.jsonl``. Checker (``checker.py``): reads every target back read_committed and proves
exactly once and in order per source partition, envelopes and hydrated bytes, orphans, gaps, and
that every relay exit and error line is explained by a fault.

    python -m bench.chaos --duration 180 --seed 15     # or: make chaos CHAOS_ARGS="..."
"""
