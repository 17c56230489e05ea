"""The operations nemesis: what an operations team does to a running mirror, one thing at a time, seeded.

Faults are not the only danger: the ordinary things done to a running mirror must keep
exactly-once too. Every ``interval`` (seeded, like the fault nemesis, from the run's seed) it
carries out the next operation of a seeded round robin over the enabled kinds (``--ops``), so a
short run does each kind it can. An operation claims its relays and clusters (the fault nemesis
leaves them alone meanwhile; it goes on elsewhere) and is logged in ``faults.jsonl`` with
``relays``, the relays it concerns.

Kinds, and the outcome the checker holds for each:
  partitions_added   1-2 partitions added to ``mirror`` (west, then east; the copier follows) or to
                     ``orders``. Every record of a new partition is on the target in that partition:
                     the relays grow their target topics (``partition: preserve``); no relay exits.
  target_recreated   a target topic (``dr/mirror``, ``plain/hydrated`` or ``plain/orders``) deleted
                     while its relays are stopped (a DR site rebuilt); they create it again on start.
                     The records it held are gone with it; every other record must arrive once (from
                     the relay's position on); one that arrives again was relayed twice. For
                     ``dr/mirror`` the hydrator is first let through all of it, then sees its source
                     topic created again under it: it must hydrate the new one from its beginning.
  rolling_restart    SIGTERM of a relay (each group instance in turn), a start under a small
                     ``max_in_flight``, SIGTERM again as soon as it relays (catching up), a normal
                     start. Every SIGTERM must end in exit 0.
  overlap_deploy     a second instance with the same config (another metrics port) started beside a
                     running one, as a deploy that overlaps: it fences the first (a group member takes
                     a share), must resume (relay records) within 90 s, and is then killed -9; the first
                     is started again if it stopped. A "fenced" exit of either is explained by it.
  rename             a relay (mirror or hydrate) stopped and started under a new ``name`` over the same
                     target: it must refuse within 60 s, exit 1 with one line naming the target topic;
                     it is then started under its own name. A renamed run still relaying is stopped
                     (SIGTERM) and counted as not refused; what it copied counts as duplicates.
  future_timestamps  a burst of records stamped up to 2 h ahead (the source topics take them:
                     ``message.timestamp.after.max.ms`` of 3 h): relayed with their timestamps.
  source_recreated   a source topic (``mirror`` on east and west, or ``orders``) deleted and created
                     again, once its producer paused and its relays relayed all of it (so nothing is
                     lost with it); the relays keep running. Its new records are new data: every one
                     must arrive, after the old ones.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # type: ignore[attr-defined]

from bench.chaos import checker
from bench.chaos.model import (
    GROUP_RELAY,
    HYDRATE_RELAY,
    HYDRATED,
    MIRROR,
    MIRROR_RELAY,
    ORDERS,
    Ledger,
    client_conf,
    identity,
)
from bench.chaos.nemesis import Claims, FaultLog, committed_positions, watermarks
from bench.chaos.relays import Relay, Run, small_in_flight, variant
from bench.chaos.workload import Copier, Feeder
from kafka_lfs_relay.sandbox import KafkaCluster
from kafka_lfs_relay.sandbox.process import free_port

KINDS = (
    "partitions_added",
    "target_recreated",
    "rolling_restart",
    "overlap_deploy",
    "rename",
    "future_timestamps",
    "source_recreated",
)
GROUP_INSTANCES = ("group-a", "group-b", "group-c")
MAX_PARTITIONS = {MIRROR: 8, ORDERS: 18}
"""Partitions added stop there: each one costs the brokers and the relays a little."""
TARGETS = {
    # target: (cluster, topic, relays writing it, relay name, pipe of its records)
    "dr/mirror": ("dr", MIRROR, ("mirror",), MIRROR_RELAY, MIRROR),
    "plain/hydrated": ("plain", HYDRATED, ("hydrate",), HYDRATE_RELAY, MIRROR),
    "plain/orders": ("plain", ORDERS, GROUP_INSTANCES, GROUP_RELAY, ORDERS),
}
SOURCES = {
    # source topic: (clusters holding it, relays reading it, relay name, positions cluster)
    MIRROR: (("west", "east"), ("mirror",), MIRROR_RELAY, "dr"),
    ORDERS: (("east",), GROUP_INSTANCES, GROUP_RELAY, "plain"),
}
REFUSAL_WAIT = 60.0
RESUME_WAIT = 90.0
CATCH_UP_WAIT = 180.0


class Operations(threading.Thread):
    """Carries out one operation after another until stopped; what each did is in ``outcomes``."""

    def __init__(
        self,
        *,
        seed: int,
        duration: float,
        interval: tuple[float, float],
        kinds: Sequence[str],
        log: FaultLog,
        relays: dict[str, Relay],
        clusters: dict[str, KafkaCluster],
        feeders: dict[str, Feeder],
        copier: Copier,
        ledgers: dict[str, Ledger],
        claims: Claims,
        source_config: dict[str, str],
        on_exit: Callable[[Relay, Run], None],
        out: Path,
    ) -> None:
        super().__init__(name="operations", daemon=True)
        self.rng = random.Random(f"operations-{seed}")
        self.interval = interval
        # No operation starts in the last 20 s: one may take minutes, and the run waits for it.
        self.until = time.monotonic() + duration - 20
        self.kinds = [k for k in KINDS if k in kinds]
        self.log = log
        self.relays = relays
        self.clusters = clusters
        self.feeders = feeders
        self.copier = copier
        self.ledgers = ledgers
        self.claims = claims
        self.source_config = source_config
        self.on_exit = on_exit
        self.out = out
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.outcomes: list[dict[str, Any]] = []
        """One per operation carried out: kind, subject, ok, and what happened."""
        self.done: Counter[str] = Counter()
        self.removed: dict[str, set[int]] = {t: set() for t in TARGETS}
        """Per target, sequence numbers of the records its deleted topic held."""
        self.extra: list[tuple[Relay, str]] = []
        """Relay processes the operations started beside the supervised ones (overlap, renamed), with
        the relay they stand for."""

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        order: list[str] = []
        for _ in range(10_000):  # bounded; the stop event ends it long before
            if self.stopping.wait(self.rng.uniform(*self.interval)) or not self.kinds:
                break
            if time.monotonic() > self.until:
                break
            if not order:
                order = list(self.kinds)
                self.rng.shuffle(order)
            kind = order.pop()
            rng = random.Random(self.rng.random())  # its own generator: the schedule stays the seed's
            try:
                getattr(self, f"_{kind}")(rng)
            except Exception as exc:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                self.log.write(kind, "error", error=f"{type(exc).__name__}: {exc}")

    def stop(self, timeout: float = 600) -> bool:
        """Stop after the operation under way (which puts everything back); True if it ended in time."""
        self.stopping.set()
        self.join(timeout)
        return not self.is_alive()

    def _outcome(self, kind: str, subject: str, ok: bool, **detail: Any) -> None:
        self.done[kind] += 1
        self.outcomes.append({"kind": kind, "subject": subject, "ok": ok, **detail})
        self.log.write(kind, "end", subject=subject, ok=ok, **detail)

    @contextlib.contextmanager
    def _claimed(self, kind: str, subjects: Sequence[str]) -> Iterator[bool]:
        """Hold ``subjects`` for the operation (waiting up to 120 s for faults on them to heal); not once
        the run stops."""
        if self.stopping.is_set() or not self.claims.wait(subjects, 120, self.stopping):
            self.log.write(kind, "skip", why=f"{', '.join(subjects)} stayed busy")
            yield False
            return
        try:
            yield True
        finally:
            self.claims.release(*subjects)

    # -- relays ----------------------------------------------------------------------------------
    def _hold(self, relay: Relay) -> None:
        """Keep the supervisor away from ``relay``; an exit it had not seen yet is judged as usual."""
        with relay.lock:
            relay.held = True
            run = relay.record_exit()
        if run is not None:
            self.on_exit(relay, run)

    def _sigterm(self, relay: Relay, kind: str) -> int | None:
        """SIGTERM (it drains), held; its exit code, None if it was not running."""
        self._hold(relay)
        if not relay.alive():
            return None
        return relay.terminate(150, cause=f"operation {kind} (SIGTERM)")

    def _release(self, relay: Relay) -> None:
        """Start ``relay`` with its own config unless it runs, and give it back to the supervisor."""
        run = relay.record_exit()
        if run is not None:
            self.on_exit(relay, run)
        with relay.lock:
            if not relay.alive():
                relay.start()
            relay.held = False

    # An operation under way is carried out to its end even when the run stops: cut short, it
    # would leave what it did half done (a relay killed while it starts, a producer paused). Its
    # waits are bounded instead; stopping only keeps the next step from starting (``_claimed``).
    @staticmethod
    def _sleep(seconds: float) -> None:
        time.sleep(seconds)

    @staticmethod
    def _wait(seconds: float, done: Callable[[], bool], every: float = 1.0) -> bool:
        """Poll ``done`` until it holds (True) or ``seconds`` pass (False)."""
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(Exception):  # a cluster under a fault: ask again
                if done():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(every)

    # -- kinds -----------------------------------------------------------------------------------
    def _partitions_added(self, rng: random.Random) -> None:
        pipes = [p for p in (MIRROR, ORDERS) if self.ledgers[p].partitions < MAX_PARTITIONS[p]]
        if not pipes:
            self.log.write("partitions_added", "skip", why="every topic has its most partitions")
            return
        pipe = rng.choice(pipes)
        clusters, readers, _, _ = SOURCES[pipe]
        ledger = self.ledgers[pipe]
        with self._claimed("partitions_added", [f"cluster:{c}" for c in clusters]) as ok, ledger.topology:
            if not ok:
                return
            total = min(MAX_PARTITIONS[pipe], ledger.partitions + rng.randint(1, 2))
            relays = list(readers) + (["hydrate"] if pipe == MIRROR else [])
            self.log.write("partitions_added", "begin", topic=pipe, partitions=total, relays=relays)
            for name in clusters:  # the standby first: the active source never has a partition it lacks
                add_partitions(self.clusters[name], pipe, total)
            if pipe == MIRROR and not self.copier.request("grow", total):
                raise RuntimeError("the copier did not follow the new partitions within 120 s")
            with ledger.lock:
                ledger.partitions = total
            self._outcome("partitions_added", pipe, True, partitions=total, relays=relays)

    def _future_timestamps(self, rng: random.Random) -> None:
        pipe = rng.choice([MIRROR, ORDERS])
        records = rng.randint(50, 300)
        relays = ["mirror", "hydrate"] if pipe == MIRROR else list(GROUP_INSTANCES)
        self.log.write("future_timestamps", "begin", topic=pipe, records=records, relays=relays)
        self.feeders[pipe].burst(records, future=True)
        self._outcome("future_timestamps", pipe, True, records=records, relays=relays)

    def _rolling_restart(self, rng: random.Random) -> None:
        subject = rng.choice(["mirror", "hydrate", "group"])
        names = list(GROUP_INSTANCES) if subject == "group" else [subject]
        codes: list[int | None] = []
        caught: list[bool] = []
        self.log.write("rolling_restart", "begin", subject=subject, relays=names)
        for name in names:
            relay = self.relays[name]
            with self._claimed("rolling_restart", [f"relay:{name}"]) as ok:
                if not ok:
                    continue
                try:
                    codes.append(self._sigterm(relay, "rolling_restart"))
                    self._sleep(rng.uniform(5, 15))  # records pile up: the next start catches up
                    small = variant(relay.config, "small", small_in_flight(relay.role))
                    with relay.lock:
                        relay.start(config=small)
                    # SIGTERM as soon as it relays: in the middle of catching up, the budget full.
                    caught.append(self._wait(60, lambda relay=relay: relay.relayed() > 0 or not relay.alive(), 0.2))
                    codes.append(self._sigterm(relay, "rolling_restart"))
                finally:
                    self._release(relay)
        ok = all(code in (0, None) for code in codes)
        self._outcome("rolling_restart", subject, ok, exit_codes=codes, relayed_before_sigterm=caught, relays=names)

    def _overlap_deploy(self, rng: random.Random) -> None:
        name = rng.choice(["mirror", "hydrate", *GROUP_INSTANCES])
        relay = self.relays[name]
        with self._claimed("overlap_deploy", [f"relay:{name}"]) as ok:
            if not ok:
                return
            self._hold(relay)
            second: Relay | None = None
            try:
                if not relay.alive():
                    relay.start()
                port = free_port()

                def other_port(config: dict[str, Any]) -> None:
                    config["metrics"]["listen"] = f"127.0.0.1:{port}"

                path = variant(relay.config, "overlap", other_port)
                label = f"{name}-overlap{self.done['overlap_deploy'] + 1}"
                second = Relay(label, relay.role, path, port, self.out / f"{label}.log")
                self.extra.append((second, name))
                self.log.write("overlap_deploy", "begin", relay=name, relays=[name])
                second.start()
                resumed = self._wait(RESUME_WAIT, lambda: second is not None and second.relayed() > 0, 0.5)
                first = relay.record_exit()
                if first is not None:
                    self.on_exit(relay, first)
                if second.alive():
                    second.kill9(cause="operation overlap_deploy (kill -9)")
                else:
                    ended = second.record_exit()
                    if ended is not None:
                        self.on_exit(second, ended)
                self._outcome(
                    "overlap_deploy",
                    name,
                    resumed,
                    second_resumed=resumed,
                    first_exit=None if first is None else first.code,
                    first_line=None if first is None else first.error_line[:300],
                    relays=[name],
                )
            finally:
                if second is not None and second.alive():
                    second.kill9(cause="operation overlap_deploy (kill -9)")
                self._release(relay)

    def _rename(self, rng: random.Random) -> None:
        name = rng.choice(["mirror", "hydrate"])
        relay = self.relays[name]
        topic = TARGETS["dr/mirror" if name == "mirror" else "plain/hydrated"][1]
        with self._claimed("rename", [f"relay:{name}"]) as ok:
            if not ok:
                return
            try:
                self._sigterm(relay, "rename")
                cluster_name = TARGETS["dr/mirror" if name == "mirror" else "plain/hydrated"][0]
                if not holds_committed(self.clusters[cluster_name], topic):
                    # Just recreated, nothing relayed into it yet: a relay under a new name may rightly copy
                    # into an empty topic, so there is no refusal to expect.
                    self.log.write("rename", "skip", relay=name, why=f"{cluster_name}/{topic} holds no record")
                    return

                def rename(config: dict[str, Any]) -> None:
                    config["name"] = f"{config['name']}-renamed"

                path = variant(relay.config, "renamed", rename)
                label = f"{name}-renamed{self.done['rename'] + 1}"
                renamed = Relay(label, "renamed", path, relay.metrics_port, self.out / f"{label}.log")
                self.extra.append((renamed, name))
                self.log.write("rename", "begin", relay=name, relays=[name])
                renamed.start()
                exited = self._wait(REFUSAL_WAIT, lambda: not renamed.alive(), 0.5)
                if exited:
                    run = renamed.record_exit()
                else:
                    renamed.terminate(150, cause="operation rename: still relaying, stopped")
                    run = renamed.runs[-1]
                lines = [ln for ln in renamed.log_segment(run).splitlines() if ln.startswith("kafka-lfs-relay:")]
                refused = exited and run is not None and run.code == 1 and len(lines) == 1 and topic in lines[0]
                self._outcome(
                    "rename",
                    name,
                    refused,
                    refused=refused,
                    exit_code=run.code if run is not None and exited else None,
                    lines=[ln[:300] for ln in lines[:3]],
                    relays=[name],
                )
            finally:
                self._release(relay)

    def _target_recreated(self, rng: random.Random) -> None:
        target = rng.choice(sorted(TARGETS))
        cluster_name, topic, writers, _, _ = TARGETS[target]
        cluster = self.clusters[cluster_name]
        subjects = [f"relay:{n}" for n in writers] + [f"cluster:{cluster_name}"]
        if target == "dr/mirror":  # the hydrator must have read it all before it goes
            subjects += ["relay:hydrate", "cluster:plain"]
        with self._claimed("target_recreated", subjects) as ok:
            if not ok:
                return
            relays = list(writers) + (["hydrate"] if target == "dr/mirror" else [])
            self.log.write("target_recreated", "begin", target=target, relays=relays)
            try:
                codes = [self._sigterm(self.relays[n], "target_recreated") for n in writers]
                held: set[int] = set()
                last: dict[int, int] = {}

                def note(partition: int, msg: Any) -> None:
                    ident = identity(tuple(msg.headers() or ()))
                    if ident is not None:
                        held.add(ident[1])
                    last[partition] = max(last.get(partition, -1), msg.offset())

                checker.scan(cluster, topic, 1000, note, timeout=600)
                if target == "dr/mirror":
                    plain = self.clusters["plain"]

                    def hydrated_all() -> bool:
                        done = committed_positions(plain, HYDRATE_RELAY, MIRROR)
                        return all(done.get(p, 0) > offset for p, offset in last.items())

                    if not self._wait(CATCH_UP_WAIT, hydrated_all, 2.0):
                        why = "the hydrator did not catch up"
                        self.log.write("target_recreated", "end", target=target, skipped=why, relays=relays)
                        return
                delete_topic(cluster, topic)
                self.removed[target].update(held)
                self.log.write("target_recreated", "deleted", target=target, records=len(held))
                self._outcome("target_recreated", target, True, records=len(held), exit_codes=codes, relays=relays)
            finally:
                for n in writers:
                    self._release(self.relays[n])

    def _source_recreated(self, rng: random.Random) -> None:
        pipe = rng.choice([MIRROR, ORDERS])
        clusters, readers, relay_name, positions_on = SOURCES[pipe]
        ledger, feeder = self.ledgers[pipe], self.feeders[pipe]
        subjects = [f"cluster:{c}" for c in clusters] + [f"relay:{n}" for n in readers]
        with self._claimed("source_recreated", subjects) as ok:
            if not ok:
                return
            with ledger.topology:
                self._recreate_source(pipe, clusters, readers, relay_name, positions_on, ledger, feeder)

    def _recreate_source(
        self,
        pipe: str,
        clusters: Sequence[str],
        readers: Sequence[str],
        relay_name: str,
        positions_on: str,
        ledger: Ledger,
        feeder: Feeder,
    ) -> None:
        east = self.clusters["east"]
        relays = list(readers)
        if not feeder.pause(300):
            feeder.resume(new_producer=False)
            raise RuntimeError(f"the {pipe} producer did not get every delivery report within 300 s")
        suspended = recreated = False
        try:
            ends = [hi for _, hi in watermarks(east, pipe, ledger.partitions)]
            since = ledger.recreated_ms

            def relayed_all() -> bool:
                done = committed_positions(self.clusters[positions_on], relay_name, pipe, since_ms=since)
                return all(done.get(p, 0) >= end for p, end in enumerate(ends) if end > 0)

            copied = pipe != MIRROR or self._wait(120, lambda: self.copier.caught_up(ends), 0.5)
            if not (copied and self._wait(CATCH_UP_WAIT, relayed_all, 2.0)):
                self.log.write("source_recreated", "skip", topic=pipe, why="its relays did not catch up")
                return
            self.log.write("source_recreated", "begin", topic=pipe, ends=ends, relays=relays)
            if pipe == MIRROR:
                suspended = self.copier.request("suspend")
            for name in clusters:
                delete_topic(self.clusters[name], pipe)
            for name in clusters:
                create_topic(self.clusters[name], pipe, ledger.partitions, self.source_config)
            with ledger.lock:
                ledger.generation += 1
                ledger.recreated_ms = int(time.time() * 1000)
            recreated = True
            self._outcome("source_recreated", pipe, True, generation=ledger.generation, ends=ends, relays=relays)
        finally:
            if suspended and not self.copier.request("restart"):
                self.errors.append("the copier did not start over on the new mirror topic within 120 s")
            feeder.resume(new_producer=recreated)


# -- topics ------------------------------------------------------------------------------------------
def _admin(cluster: KafkaCluster) -> AdminClient:
    return AdminClient({**client_conf(cluster), "socket.timeout.ms": 10_000})


def _retry(call: Callable[[], Any], what: str, seconds: float = 180) -> Any:
    """``call()`` again every 2 s while it fails (a cluster under a fault), for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from None
            time.sleep(2)


def holds_committed(cluster: KafkaCluster, topic: str, seconds: float = 15) -> bool:
    """Whether ``topic`` holds a committed record (what makes a relay under a new name refuse to start)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    def look() -> bool:
        count = checker.partition_count(cluster, topic)
        consumer = Consumer(
            {**client_conf(cluster), "group.id": "chaos-holds", "isolation.level": "read_committed",
             "enable.auto.commit": False, "enable.partition.eof": True}
        )  # fmt: skip
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(count)])
            ends, deadline = 0, time.monotonic() + seconds
            while ends < count and time.monotonic() < deadline:
                for msg in consumer.consume(100, 0.5):
                    if msg.error() is None:
                        return True
                    ends += 1  # an end of partition (or an error): nothing committed there
            return False
        finally:
            consumer.close()

    return bool(_retry(look, f"reading {topic} on {cluster.name}"))


def add_partitions(cluster: KafkaCluster, topic: str, total: int) -> None:
    """Grow ``topic`` to ``total`` partitions (done already counts)."""

    def grow() -> None:
        if checker.partition_count(cluster, topic) >= total:
            return
        admin = _admin(cluster)  # held until the answers: a dropped client aborts its requests
        futures = admin.create_partitions([NewPartitions(topic, total)], operation_timeout=30)
        for fut in futures.values():
            fut.result(timeout=60)

    _retry(grow, f"adding partitions to {topic} on {cluster.name}")


def delete_topic(cluster: KafkaCluster, topic: str) -> None:
    """Delete ``topic`` and wait until the cluster no longer lists it."""

    def delete() -> None:
        if checker.partition_count(cluster, topic) == 0:
            return
        admin = _admin(cluster)
        for fut in admin.delete_topics([topic], operation_timeout=30).values():
            fut.result(timeout=60)
        raise RuntimeError("still listed")  # looked at again after 2 s

    _retry(delete, f"deleting {topic} on {cluster.name}")


def create_topic(cluster: KafkaCluster, topic: str, partitions: int, config: dict[str, str]) -> None:
    """Create ``topic`` (a deletion may still be finishing: tried again) and wait for its partitions."""

    def create() -> None:
        if checker.partition_count(cluster, topic) == partitions:
            return
        admin = _admin(cluster)
        futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config)], operation_timeout=30)
        for fut in futures.values():
            fut.result(timeout=60)
        raise RuntimeError("not listed yet")

    _retry(create, f"creating {topic} on {cluster.name}")
