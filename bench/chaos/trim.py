"""Keeps a long soak within the disk: the source records the mirror relay is done with are deleted.

Every ``every`` seconds, on each ``mirror`` partition, records on east and west below
``min(the relay's committed position, the standby copier's position) - margin`` are deleted: what a
careful retention policy does, never ahead of the relay. The checker compares against the workload's
ledger, not the sources, so this removes nothing it needs. Unlike the ``delete_behind`` fault it is
housekeeping, not a fault: it claims nothing, is not in the fault log, and a source a pass missed (a
broker the nemesis killed) is tried again 15 s later. The brokers free whole segments only, at their next
retention check (every 5 minutes in the sandbox).
"""

from __future__ import annotations

import threading
from pathlib import Path

from bench.chaos.model import MIRROR, MIRROR_RELAY, Ledger
from bench.chaos.nemesis import committed_positions, delete_records, watermarks
from bench.chaos.workload import Copier
from kafka_lfs_relay.sandbox import KafkaCluster

SOURCES = ("east", "west")


def trim_once(
    clusters: dict[str, KafkaCluster], copier: Copier, ledger: Ledger, margin: int
) -> tuple[dict[str, dict[int, int]], dict[str, str]]:
    """One pass: per source, the partitions trimmed and the offset below which records were deleted;
    per source that could not be trimmed (a broker the nemesis killed), why. Sources are trimmed
    one by one, so an outage of one leaves the other trimmed. The caller holds ``ledger.topology``:
    the partition count and generation of the topic do not change meanwhile, and a position the
    relay wrote for the topic before it was created again counts for nothing."""
    partitions = ledger.partitions
    committed = committed_positions(clusters["dr"], MIRROR_RELAY, MIRROR, timeout=30, since_ms=ledger.recreated_ms)
    copied = copier.position()
    below = {p: min(committed[p], copied[p]) - margin for p in committed}  # none yet: the relay may need all
    trimmed: dict[str, dict[int, int]] = {}
    failed: dict[str, str] = {}
    for name in SOURCES:
        try:
            lows = watermarks(clusters[name], MIRROR, partitions)
            for p, offset in sorted(below.items()):
                if offset > lows[p][0]:
                    delete_records(clusters[name], MIRROR, p, offset)
                    trimmed.setdefault(name, {})[p] = offset
        except Exception as exc:  # this source is down or slow: the next pass
            failed[name] = f"{type(exc).__name__}: {exc}"
    return trimmed, failed


class Trimmer(threading.Thread):
    """Runs :func:`trim_once` every ``every`` seconds until stopped (sooner after a pass that missed a
    source); each pass is a line in ``log_path``. ``failures`` counts the passes that missed one."""

    def __init__(
        self, clusters: dict[str, KafkaCluster], copier: Copier, ledger: Ledger, every: float, log_path: Path
    ) -> None:
        super().__init__(name="trimmer", daemon=True)
        self.clusters = clusters
        self.copier = copier
        self.ledger = ledger
        self.every = every
        self.log_path = log_path
        self.margin = 500  # records kept behind the relay and the copier
        self.stopping = threading.Event()
        self.passes = 0
        self.failures = 0

    def run(self) -> None:
        wait = self.every
        with self.log_path.open("a", encoding="utf-8") as out:
            while not self.stopping.wait(wait):
                if not self.ledger.topology.acquire(timeout=1):  # the topic is being changed: the next pass
                    trimmed, failed = {}, {"mirror": "the topic was being changed"}
                else:
                    try:
                        trimmed, failed = trim_once(self.clusters, self.copier, self.ledger, self.margin)
                    except Exception as exc:  # the target's positions could not be read (dr down): the next pass
                        trimmed, failed = {}, {"dr": f"{type(exc).__name__}: {exc}"}
                    finally:
                        self.ledger.topology.release()
                self.passes += 1
                self.failures += bool(failed)
                out.write(f"deleted below {trimmed}" + (f"; not trimmed: {failed}" if failed else "") + "\n")
                out.flush()
                # A pass that missed a source (an outage lasts at most 30 s) is tried again soon.
                wait = min(self.every, 15.0) if failed else self.every

    def stop(self) -> None:
        self.stopping.set()
        self.join(120)
