"""Scenario f: start-up on a target topic that holds a million records of another producer.

The release that kept positions in ``kfr-pos`` headers had to read a target partition back to
its start when none of its records were there, at every start-up. Positions now live in the
positions topic, so a restart reads only that. Contenders, alternated run by run, each a
``run --stop-at-end`` with nothing left to relay, so the whole run is start-up:

* ``release``: the header release (``git archive`` of :data:`RELEASE` from this repository);
* ``first-start``: this relay under a new name, so no positions entry exists yet and the one-time
  header import (``target.import_header_positions``) reads the target back, as the release did;
* ``restart``: this relay under a name whose entries exist (every start after the first);
* ``no-import``: this relay under a new name with the header import off.

``python -m bench.startup [--records 1000000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

from bench.clusters import create_topic, fill_topic, fresh_clusters
from bench.machine import machine_info
from bench.paths import WORK
from bench.procs import Child, exit_on_sigterm
from bench.relay_launch import (
    relay_argv,
    relay_env,
    revision_argv,
    revision_env,
    revision_tree,
    write_yaml,
)
from bench.results import Result, common_args, log, median, now_text, write_result
from kafka_lfs_relay.sandbox import cluster_entry

RELEASE = "92ab6cf"
CONTENDERS = ("release", "first-start", "restart", "no-import")
PARTITIONS = 6


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="foreign records in the target topic")
    common_args(parser, runs=3)
    args = parser.parse_args()
    started = now_text()
    runs: list[dict[str, Any]] = []
    work = WORK / f"startup-{uuid.uuid4().hex[:6]}"
    with fresh_clusters(["src", "dst"], "startup") as clusters:
        src, dst = clusters["src"], clusters["dst"]
        create_topic(src, "orders", PARTITIONS)
        create_topic(dst, "orders", PARTITIONS)
        log(f"filling the target topic with {args.records:,} records of another producer")
        fill_topic([dst], "orders", args.records, PARTITIONS, size=200, with_header=False)
        release = revision_tree(RELEASE)

        def config(name: str, **target: Any) -> Path:
            body = {
                "name": name,
                "sources": [cluster_entry(src, "src")],
                "topics": [{"source": "orders"}],
                "target": {**cluster_entry(dst, "dst"), **target},
                "log": {"format": "json"},
            }
            return write_yaml(work / f"{name}.yml", body)

        def run(contender: str, round_no: int) -> dict[str, Any]:
            name = f"{contender}-{round_no}-{uuid.uuid4().hex[:6]}"
            if contender == "release":
                # python -m puts the working directory first on the path: run from the release's tree.
                argv = revision_argv(release, config(name), "--stop-at-end")
                return _timed(Child(name, argv, work / f"{name}.log", revision_env(release), cwd=release))
            # The target topic holds another producer's records: this relay relays next to them on purpose.
            if contender == "restart":
                path = config("restart", on_existing_data="append")
            elif contender == "no-import":
                path = config(name, import_header_positions=False, on_existing_data="append")
            else:
                path = config(name, on_existing_data="append")
            return _timed(Child(name, [*relay_argv(path), "--stop-at-end"], work / f"{name}.log", relay_env()))

        warm = config("restart", on_existing_data="append")
        _timed(Child("warm-up", [*relay_argv(warm), "--stop-at-end"], work / "warm.log", relay_env()))
        for round_no in range(args.runs):
            for contender in CONTENDERS:
                row = run(contender, round_no)
                row["contender"] = contender
                log(f"{contender}: {row['seconds']:.2f} s")
                runs.append(row)
    rows = []
    for contender in CONTENDERS:
        mine = [r for r in runs if r["contender"] == contender]
        rows.append(
            {
                "contender": contender,
                "start-up s": median([r["seconds"] for r in mine]),
                "CPU s": median([r["cpu"] for r in mine]),
                "runs": len(mine),
            }
        )
    base = rows[0]["start-up s"]
    notes = [
        f"{r['contender']}: {r['start-up s'] / base:.2f}x the release's start-up" for r in rows[1:] if base > 0
    ] + [
        "Each run is `run --stop-at-end` with nothing to relay: its whole wall time is start-up (process start, "
        "metadata, fencing, reading positions back).",
    ]
    write_result(
        Result(
            name="f_startup",
            title=f"f. Start-up on a target topic holding {args.records:,} records of another producer",
            columns=["contender", "start-up s", "CPU s", "runs"],
            rows=rows,
            settings={"foreign records": args.records, "partitions": PARTITIONS, "release": RELEASE},
            notes=notes,
            runs=runs,
            machine=machine_info(),
            started=started,
            finished=now_text(),
        )
    )


def _timed(child: Child) -> dict[str, Any]:
    """Run ``child`` to its end: wall seconds and CPU seconds."""
    stats = child.start().wait(600)
    if stats.returncode != 0:
        raise RuntimeError(f"{child.name} exited {stats.returncode}; see {child.log_path}:\n{child.log_tail()}")
    return {"seconds": stats.wall, "cpu": stats.cpu}


if __name__ == "__main__":
    main()
