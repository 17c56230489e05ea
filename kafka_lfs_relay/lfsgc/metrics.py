"""Metrics of one ``lfs gc`` run, for a periodic job: pushed to a Pushgateway, or written as a textfile.

A run is a batch job, not a server: nothing scrapes it while it runs. So its figures go where
Prometheus expects batch jobs to leave them: ``--pushgateway URL`` (the usual choice for a
Kubernetes CronJob; pushed under job ``kafka-lfs-relay-lfs-gc`` and the relay's name, replacing
the previous run's) or ``--metrics-file PATH`` (node_exporter's textfile collector, for cron on
a host; written atomically). Either way the last run's figures stay until the next run.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from kafka_lfs_relay.lfsgc.census import STATES, Census
from relay.metrics import PREFIX

JOB = "kafka-lfs-relay-lfs-gc"


def registry(
    census: Census | None, deleted: tuple[int, int] | None, errors: int, seconds: float, success: bool
) -> CollectorRegistry:
    """The run's gauges: objects and bytes per state, what was deleted, errors, duration, when, and success."""
    reg = CollectorRegistry()
    p = f"{PREFIX}_lfs_gc"
    objects = Gauge(
        f"{p}_objects", "Objects under the relay's keys at the last run, by state.", ["state"], registry=reg
    )
    size = Gauge(f"{p}_bytes", "Bytes of those objects, by state.", ["state"], registry=reg)
    if census is not None:
        for state in STATES:
            objects.labels(state=state).set(census.objects[state])
            size.labels(state=state).set(census.bytes[state])
    removed, removed_bytes = deleted or (0, 0)
    Gauge(f"{p}_deleted_objects", "Objects the last run deleted (0 in a dry run).", registry=reg).set(removed)
    Gauge(f"{p}_deleted_bytes", "Bytes the last run deleted.", registry=reg).set(removed_bytes)
    Gauge(f"{p}_errors", "Objects the last run failed to delete, or 1 if it failed as a whole.", registry=reg).set(
        errors
    )
    Gauge(f"{p}_duration_seconds", "How long the last run took.", registry=reg).set(seconds)
    Gauge(f"{p}_last_run_timestamp_seconds", "When the last run ended (Unix time).", registry=reg).set(time.time())
    Gauge(f"{p}_success", "1 if the last run completed without an error.", registry=reg).set(1 if success else 0)
    return reg


def publish(reg: CollectorRegistry, relay: str, metrics_file: Path | None, pushgateway: str | None) -> None:
    """Write ``reg`` where the command line says."""
    if metrics_file is not None:
        write_to_textfile(str(metrics_file), reg)
    if pushgateway is not None:
        push_to_gateway(pushgateway, job=JOB, registry=reg, grouping_key={"relay": relay})
