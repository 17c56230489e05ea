"""Benchmarks: scripts (not timed tests) that run on fresh sandbox clusters. See ``bench/common.py``.

Each scenario runs alone (``python -m bench.relay_throughput``, ``bench.latency``, ``bench.failover``)
and writes a JSON result to ``build/bench/results/``; ``python -m bench.report`` turns every result
there into ``docs/benchmarks.md`` and ``docs/benchmarks.png``. ``make bench`` does all of it.
"""
