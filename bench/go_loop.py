"""The compiled baseline: ``bench/gorelay`` (Go, franz-go), built on first use.

``bench/gorelay/main.go`` is a minimal consume -> produce loop: every source partition assigned from
the beginning (no group), each record (key, value, headers, timestamp) produced to the same target
partition by an idempotent, acks=all, lz4 producer with our relay's batching; it stops at the end
offsets seen at start. ``-txn`` makes each poll (at most ``-batch`` records) one transaction, as
our relay commits one transaction per batch; ``-compression none`` leaves out lz4. It is "what a
compiled relay does on this machine".

:func:`binary` runs ``go build`` into ``build/bench/gorelay/`` when the binary is missing or older
than its sources; the Go module proxy serves franz-go on the first build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from bench.clusters import CONSUMER_FETCH, PRODUCER_BATCHING
from bench.paths import BUILD, ROOT
from bench.results import log

SOURCE = ROOT / "bench" / "gorelay"
BINARY = BUILD / "gorelay" / "gorelay"
BATCH = 20_000  # records per poll, so per transaction with -txn: our relay's batch.max_records
DONE = re.compile(r"^copied (\d+) records in (\d+) transactions$", re.MULTILINE)

SETTINGS = {
    "client": "franz-go (bench/gorelay/go.mod), Go as installed; GOMAXPROCS = cores",
    "consumer": {**CONSUMER_FETCH, "isolation": "read_committed", "assignment": "every partition from the beginning"},
    "producer": {
        **PRODUCER_BATCHING,
        "idempotent": "yes (franz-go's default)",
        "partitioner": "manual (the source partition)",
    },
    "go": f"no transactions; polls of at most {BATCH:,} records",
    "go-txn": f"one transaction per poll of at most {BATCH:,} records (Flush, then EndTransaction(TryCommit))",
    "go-nocompress": "go with -compression none",
}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise SystemExit(
            "contenders go, go-txn and go-nocompress need the Go toolchain (go 1.26 or newer, franz-go v1.22's "
            "minimum) on PATH to build bench/gorelay; install Go, or leave them out with --contenders"
        )
    return go


def binary() -> Path:
    """The built ``gorelay``, (re)built first when missing or older than any of its sources."""
    sources = [p for p in SOURCE.iterdir() if p.suffix == ".go" or p.name in ("go.mod", "go.sum")]
    if BINARY.exists() and BINARY.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return BINARY
    go = _go()
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    log(f"building {BINARY} (go build; the first build fetches franz-go from the Go module proxy)")
    env = {**os.environ, "GOFLAGS": " ".join(filter(None, (os.environ.get("GOFLAGS"), "-mod=readonly")))}
    proc = subprocess.run(
        [go, "build", "-trimpath", "-o", str(BINARY), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"go build of bench/gorelay failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return BINARY


def argv(source: str, target: str, topic: str, out: str, transactions: bool, compress: bool = True) -> list[str]:
    """The command line of one run; ``topic`` and ``out`` may each name several topics, comma-separated, in pairs."""
    args = [str(binary()), "-source", source, "-target", target, "-topic", topic, "-out", out]
    args += ["-batch", str(BATCH), "-compression", "lz4" if compress else "none"]
    return [*args, "-txn"] if transactions else args


def copied(output: str) -> tuple[int, int]:
    """(records, transactions) from the last line ``gorelay`` printed."""
    found = DONE.findall(output)
    if not found:
        raise RuntimeError(f"gorelay printed no 'copied N records' line:\n{output[-2000:]}")
    records, txns = found[-1]
    return int(records), int(txns)
