"""Our relay's CLI with a CPU-seconds-per-thread report at exit (Linux): where a relay's CPU goes.

Samples ``/proc/self/task/*/stat`` every 0.2 s, keeping each thread's newest figures, so threads that
end before the process (librdkafka's, when a client is closed) are counted too; at exit prints one
JSON line, ``{"thread_cpu": {name: seconds, ...}}``, to stderr. librdkafka names its threads
``rdk:main``, ``rdk:broker<id>`` and so on; threads of one name are added up.

    BENCH_RELAY_MODULE=bench.threadcpu python -m bench.relay_throughput --contenders relay ...

or ``--candidate-module bench.threadcpu`` to get it beside an unwrapped run.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import defaultdict

_TICKS = os.sysconf("SC_CLK_TCK")
_seen: dict[int, tuple[str, float]] = {}
_lock = threading.Lock()


def _sample() -> None:
    base = "/proc/self/task"
    python = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        name = python.get(int(tid)) or stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        with _lock:
            _seen[int(tid)] = (name, cpu)


def _loop() -> None:
    while True:
        _sample()
        threading.Event().wait(0.2)


def _report() -> None:
    _sample()
    total: dict[str, float] = defaultdict(float)
    with _lock:
        for name, cpu in _seen.values():
            # librdkafka threads carry their broker's id (rdk:broker3): one line per kind of thread.
            kind = name.rstrip("0123456789") if name.startswith("rdk:broker") else name
            total[kind] += cpu
    report = {k: round(v, 2) for k, v in sorted(total.items(), key=lambda kv: -kv[1])}
    print(json.dumps({"thread_cpu": report, "total": round(sum(total.values()), 2)}), file=sys.stderr, flush=True)


def main() -> int:
    threading.Thread(target=_loop, name="threadcpu", daemon=True).start()
    atexit.register(_report)
    from kafka_lfs_relay.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
