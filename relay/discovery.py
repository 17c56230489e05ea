"""Live discovery: topics created on the source that a pattern selects, and selected topics deleted there.

A :class:`TopicWatch` lists the active source's topics every ``topic_refresh`` seconds on a thread
of its own and publishes what changed since the relay last took a change (:meth:`TopicWatch.take`);
the relay's thread takes it between two polls and carries it out (new routes, new partitions read
from their beginning; deleted topics dropped from reading), so the consumer stays the relay
thread's alone. Only topics selected by a pattern come and go: an explicit topic is always read,
and a source that lacks one is unhealthy, as without discovery.

A topic is taken once its metadata shows every partition with a leader (a topic being created
is listed for a moment before that); until then it waits for the next look.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from relay.errors import RelayError
from relay.kafkautil import client_error_text
from relay.logs import librdkafka_logger
from relay.selection import Change, TopicSelection
from relay.settings import ClusterConfig

log = structlog.get_logger("kafka_lfs_relay.relay")


class DiscoveryError(RelayError):
    """The source's topics could not be listed at start-up; the message names the cluster."""

    code = "source"


def listed_topics(md: Any) -> tuple[set[str], set[str]]:
    """(topics ready to read, topics listed but not ready yet) in cluster metadata ``md``."""
    ready: set[str] = set()
    pending: set[str] = set()
    for name, tmd in md.topics.items():
        if tmd.error is None and tmd.partitions and all(p.leader >= 0 for p in tmd.partitions.values()):
            ready.add(name)
        else:
            pending.add(name)
    return ready, pending


class TopicWatch:
    """Looks for selected topics that appeared or went away on the active source; see the module docstring.

    ``active`` names the source the relay reads now (a failover changes it); ``clusters`` are the
    sources by name.
    """

    def __init__(
        self,
        selection: TopicSelection,
        clusters: Mapping[str, ClusterConfig],
        active: Callable[[], str],
        timeout: float,
    ) -> None:
        self.selection = selection
        self._clusters = clusters
        self._active = active
        self._timeout = max(timeout, 5.0)
        self._admins: dict[str, AdminClient] = {}
        self._lock = threading.Lock()
        self._known: dict[str, str] = {}  # topic -> its target, for every topic the relay reads or will
        self._pending = Change()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    def _admin(self, name: str) -> AdminClient:
        admin = self._admins.get(name)
        if admin is None:
            conf: dict[str, Any] = {**self._clusters[name].client_config(), "logger": librdkafka_logger()}
            admin = self._admins[name] = AdminClient(conf)
        return admin

    def scan(self) -> Change:
        """List the active source now; the routes added and the topics removed since the last look.

        Raises :class:`DiscoveryError` naming the cluster if it cannot be listed.
        """
        name = self._active()
        try:
            md = self._admin(name).list_topics(timeout=self._timeout)
        except KafkaException as exc:
            raise DiscoveryError(f"source {name}: listing topics: {client_error_text(exc.args[0].str())}") from None
        ready, pending = listed_topics(md)
        routes = self.selection.routes(ready)
        explicit = {r.source for r in self.selection.explicit}
        with self._lock:
            added = [r for topic, r in routes.items() if topic not in self._known]
            # A topic still being created (listed, not ready) is not gone: it stays until it is unlisted.
            removed = [t for t in self._known if t not in routes and t not in pending and t not in explicit]
            for route in added:
                self._known[route.source] = route.target
            for topic in removed:
                del self._known[topic]
        return Change(added, removed)

    # -- the thread ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Look again every ``topic_refresh`` seconds, on a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="topic-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.selection.refresh):
            try:
                change = self.scan()
            except DiscoveryError as exc:
                # Reachability is the health checker's to act on; discovery simply looks again later.
                self._failures += 1
                if self._failures == 1:
                    log.warning("could not look for new topics; trying again", error=str(exc))
                continue
            self._failures = 0
            if change:
                with self._lock:
                    self._merge(change)

    def _merge(self, change: Change) -> None:
        """Add ``change`` to what the relay has not taken yet (under the lock)."""
        pending = self._pending
        was_added = {r.source for r in pending.added}
        was_removed = set(pending.removed)
        gone = set(change.removed)
        came = {r.source for r in change.added}
        # A topic that came and went before the relay took it never reaches the relay; one that went
        # and came back (deleted and created again) is still read: it resumes where the target says.
        pending.added = [r for r in pending.added if r.source not in gone]
        pending.added += [r for r in change.added if r.source not in was_removed]
        pending.removed = [t for t in pending.removed if t not in came]
        pending.removed += [t for t in change.removed if t not in was_added]

    def take(self) -> Change | None:
        """What changed since the last take, or None (the relay's thread)."""
        with self._lock:
            if not self._pending:
                return None
            change, self._pending = self._pending, Change()
        return change
