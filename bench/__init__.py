"""Benchmarks: scripts (not timed tests) that run on fresh sandbox clusters.

What the scenarios share, one module per job: ``procs`` (measured child processes), ``clusters``
(sandbox clusters, topics, records), ``relay_launch`` (the relay under test), ``results`` (the JSON
result and its tables), ``machine`` (what it ran on) and ``paths``.

Each scenario runs alone (``python -m bench.relay_throughput``, ``bench.latency``, ``bench.failover``)
and writes a JSON result to ``build/bench/results/``; ``python -m bench.report`` turns every result
there into ``docs/benchmarks.md`` and ``docs/benchmarks.png``. ``make bench`` does all of it.
"""
