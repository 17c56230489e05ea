"""Prometheus metrics of one relay, in a registry of its own (no global state), and its HTTP listener.

The listener serves ``/metrics`` (Prometheus), ``/healthz`` (liveness) and ``/readyz``
(readiness, see :mod:`relay.health`) on one port.
"""

from __future__ import annotations

import json
import platform
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import confluent_kafka
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from relay import __version__
from relay.health import RelayHealth

PREFIX = "kafka_lfs_relay"


class RelayMetrics:
    """Every metric the relay exports. Created once per relay and passed to whoever updates it."""

    def __init__(self, registry: CollectorRegistry | None = None, health: RelayHealth | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.health = health or RelayHealth()
        self._register_runtime(self.registry)
        self._register_throughput(self.registry)
        self._register_sources(self.registry)
        self._register_producer(self.registry)
        self._register_group(self.registry)

    def _register_runtime(self, r: CollectorRegistry) -> None:
        """The process, the versions it runs and its readiness."""
        # The standard collectors, in the relay's own registry: process_* (CPU, resident memory,
        # open file descriptors, start time), python_info and python_gc_*.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:
            GCCollector(registry=r)
        self.build_info = Info(f"{PREFIX}_build", "The relay's version and the versions it runs on.", registry=r)
        self.build_info.info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "confluent_kafka": str(confluent_kafka.__version__),
                "librdkafka": confluent_kafka.libversion()[0],
            }
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 while /readyz answers ready (see relay.health), else 0.", registry=r)
        self.ready.set_function(lambda: 1.0 if self.health.readiness()[0] else 0.0)

    def _register_throughput(self, r: CollectorRegistry) -> None:
        """What reached the target, and how far it trails the source."""
        self.records_relayed = Counter(
            f"{PREFIX}_records_relayed",
            "Records durably written to the target.",
            ["source_cluster", "topic", "partition"],
            registry=r,
        )
        self.bytes_relayed = Counter(
            f"{PREFIX}_bytes_relayed",
            "Bytes (key, value, headers) durably written to the target.",
            ["source_cluster", "topic", "partition"],
            registry=r,
        )
        self.lag = Gauge(
            f"{PREFIX}_lag_records",
            "Source end offset minus the relay's next offset, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.replication_lag = Gauge(
            f"{PREFIX}_replication_lag_seconds",
            "Age of the oldest source record read and not yet committed on the target (now minus its source "
            "timestamp), per partition; 0 when everything read is committed.",
            ["topic", "partition"],
            registry=r,
        )

    def _register_sources(self, r: CollectorRegistry) -> None:
        """The source side: which cluster is read, its health, records lost and topics recreated there."""
        self.source_switches = Counter(
            f"{PREFIX}_source_switches",
            "Switches of the active source cluster, by reason.",
            ["from_source", "to_source", "reason"],
            registry=r,
        )
        self.source_healthy = Gauge(
            f"{PREFIX}_source_healthy", "1 if the source cluster passed its last health check.", ["source"], registry=r
        )
        self.source_active = Gauge(
            f"{PREFIX}_source_active", "1 for the source cluster the relay reads from.", ["source"], registry=r
        )
        self.source_catching_up = Gauge(
            f"{PREFIX}_source_catching_up",
            "Partitions the relay waits on because this source has not reached the relay's position there "
            "(a standby that trails, a source that lost records already relayed).",
            ["source"],
            registry=r,
        )
        self.records_lost = Counter(
            f"{PREFIX}_records_lost",
            "Source offsets skipped because their records were deleted before they were relayed (on_gap: skip); "
            "an upper bound when the range held transaction markers.",
            ["reason", "topic", "partition"],
            registry=r,
        )
        self.source_topic_recreated = Counter(
            f"{PREFIX}_source_topic_recreated",
            "Times a source topic was found deleted and created again (a new topic id): its records were relayed "
            "from its beginning, after those of the old topic.",
            ["topic"],
            registry=r,
        )

    def _register_producer(self, r: CollectorRegistry) -> None:
        """The target producer: transaction latency, errors, buffered bytes and restarts."""
        self.produce_latency = Histogram(
            f"{PREFIX}_produce_latency_seconds",
            "Time to produce and commit one batch (one transaction).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.produce_errors = Counter(
            f"{PREFIX}_produce_errors", "Failed produce or commit attempts, by Kafka error name.", ["kind"], registry=r
        )
        self.in_flight_bytes = Gauge(
            f"{PREFIX}_in_flight_bytes",
            "Bytes read from the source and not yet acknowledged by the target.",
            registry=r,
        )
        self.target_restarts = Counter(
            f"{PREFIX}_target_restarts", "Times the target re-initialised and the relay re-read positions.", registry=r
        )

    def _register_group(self, r: CollectorRegistry) -> None:
        """Group mode (partition ownership, rebalances) and the group_offsets sync."""
        self.partitions_owned = Gauge(
            f"{PREFIX}_partitions_owned", "Source partitions this instance owns (group mode).", registry=r
        )
        self.rebalances = Counter(
            f"{PREFIX}_rebalances",
            "Group rebalance callbacks, by kind (assigned, revoked, lost).",
            ["kind"],
            registry=r,
        )
        self.group_offsets_lag = Gauge(
            f"{PREFIX}_group_offsets_translation_lag_records",
            "Records a consumer of the group switching to the target now would re-read at most, over all its "
            "partitions (group_offsets sync).",
            ["group"],
            registry=r,
        )
        self.group_offsets_syncs = Counter(
            f"{PREFIX}_group_offsets_syncs",
            "Background syncs of a group's offsets to the target, by outcome (committed, unchanged, "
            "active_members, no_offsets, error).",
            ["group", "outcome"],
            registry=r,
        )

    def watch_filters(self, stats: Callable[[], Mapping[str, FilterCounts]]) -> None:
        """Export the filter chain's own counters, read at scrape time (no work per record)."""
        self.registry.register(_FilterCollector(stats))

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from daemon threads; the bound port."""
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = type("_Listener", (_Listener,), {"address_family": family})
        app = _health_app(make_wsgi_app(self.registry), self.health)
        server: WSGIServer = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return int(server.server_address[1])

    def relayed(self) -> tuple[int, int]:
        """Records and bytes the target committed so far, summed over every partition."""

        def total(counter: Counter) -> int:
            return int(sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")))

        return total(self.records_relayed), total(self.bytes_relayed)


class FilterCounts(Protocol):
    """What a filter chain reports per filter (``filters.FilterStats`` has this shape)."""

    @property
    def kept(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def seconds(self) -> float: ...


class _FilterCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, FilterCounts]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        kept = CounterMetricFamily(f"{PREFIX}_filter_records_kept", "Records a filter kept.", labels=["filter"])
        dropped = CounterMetricFamily(
            f"{PREFIX}_filter_records_dropped", "Records a filter dropped (on_error: drop included).", labels=["filter"]
        )
        errors = CounterMetricFamily(f"{PREFIX}_filter_errors", "Exceptions raised by a filter.", labels=["filter"])
        seconds = CounterMetricFamily(f"{PREFIX}_filter_seconds", "Time spent inside a filter.", labels=["filter"])
        for name, st in self._stats().items():
            kept.add_metric([name], st.kept)
            dropped.add_metric([name], st.dropped)
            errors.add_metric([name], st.errors)
            seconds.add_metric([name], st.seconds)
        yield from (kept, dropped, errors, seconds)


class _Listener(ThreadingMixIn, WSGIServer):
    """One thread per request, none of them keeping the process alive."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: an orchestrator probes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _health_app(metrics_app: _WsgiApp, health: RelayHealth) -> _WsgiApp:
    """``/healthz`` and ``/readyz`` as JSON (200 or 503); every other path is the Prometheus app's."""
    probes = {"/healthz": health.liveness, "/readyz": health.readiness}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics_app(environ, start_response)
        try:
            ok, body = probe()
            status = "200 OK" if ok else "503 Service Unavailable"
        except Exception as exc:  # a probe must answer; a bug here is not the relay's health
            status, body = "500 Internal Server Error", {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        data = (json.dumps(body) + "\n").encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
        start_response(status, headers)
        return [data]

    return app
