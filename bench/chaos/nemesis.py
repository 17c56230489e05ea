"""The nemesis: one random fault every few seconds (seeded), faults overlapping, each logged as JSON lines.

Kinds:
  relay_kill     kill -9 of a relay process, restarted 0-10 s later
  relay_pause    SIGSTOP of a relay for longer than the group session timeout (a zombie), then SIGCONT
  broker_kill    kill -9 of the active source broker, the standby, or a target broker; restarted 2-30 s later
  s3_kill        kill -9 of the S3 server; restarted 2-30 s later
  delete_behind  delete_records on a source partition of the mirror topic, on east and west alike, below
                 what the relay committed and the standby holds (harmless: nothing unrelayed is removed)
  gap            once per run: the mirror relay is stopped, records ahead of its position are deleted on both
                 sources, and it is started again: a real gap it must report under on_gap
  burst          a burst of 1,000-5,000 extra small records into one pipeline

A fault claims its subjects (a relay, a cluster, S3) so that two faults never act on the same one
at once; anything else may overlap. Every sleep is a wait on the stop event, so stopping the
nemesis heals everything within one restart.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from bench.chaos.model import MIRROR, MIRROR_RELAY, Ledger, client_conf
from bench.chaos.relays import Relay
from bench.chaos.workload import Copier, Feeder
from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from targets.kafka.positions import default_topic

T = TypeVar("T")

WEIGHTS = {
    "relay_kill": 3.0,
    "relay_pause": 2.0,
    "broker_kill": 3.0,
    "s3_kill": 1.0,
    "delete_behind": 1.5,
    "burst": 1.0,
}


class FaultLog:
    """JSON lines, one per fault phase (begin, end, skip), with wall time and seconds since the start."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self.started = started
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def write(self, kind: str, phase: str, **fields: Any) -> dict[str, Any]:
        """Append one event."""
        now = time.time()
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
            "wall": round(now, 3),
            "t": round(now - self.started, 3),
            "kind": kind,
            "phase": phase,
            **fields,
        }
        with self._lock:
            self.events.append(event)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
        return event


def committed_positions(
    cluster: KafkaCluster, relay_name: str, topic: str, timeout: float = 60, since_ms: int = 0
) -> dict[int, int]:
    """The relay's committed positions for ``topic`` (next source offset per partition), read from its positions topic.

    Read independently of the relay's code: every record of the compacted topic, read_committed, the
    newest per key ``<relay>/<topic>/<partition>``, up to each partition's end as it was when reading
    started (relays keep writing it, so "every partition at its end at once" may never happen).
    ``since_ms``: when the source topic was last created again; a newest entry written before that
    is the old topic's position, and the partition is left out.
    """
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(
        {
            **client_conf(cluster),
            "group.id": "chaos-positions",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "socket.timeout.ms": 5000,
        }
    )
    prefix = f"{relay_name}/{topic}/"
    positions_topic = default_topic(relay_name)  # the chaos configs leave target.positions_topic unset
    out: dict[int, int] = {}
    try:
        md = consumer.list_topics(positions_topic, timeout=10)
        meta = md.topics.get(positions_topic)
        if meta is None or meta.error is not None:
            return out
        parts = list(meta.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(positions_topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(positions_topic, p, -2) for p in parts])
        at_end = {p for p, end in ends.items() if end <= 0}
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading positions on {cluster.name} took over {timeout}s")
            for msg in consumer.consume(1000, 0.5):
                err, partition, offset = msg.error(), msg.partition() or 0, msg.offset() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and offset >= ends[partition]:
                        at_end.add(partition)
                    continue
                if offset >= ends[partition] - 1:
                    at_end.add(partition)
                key = (msg.key() or b"").decode("utf-8", "replace")
                value = msg.value()
                if key.startswith(prefix) and value:
                    partition_of = int(key[len(prefix) :])
                    if msg.timestamp()[1] >= since_ms:
                        out[partition_of] = int(json.loads(value)["next"])
                    else:
                        out.pop(partition_of, None)
    finally:
        consumer.close()
    return out


def watermarks(cluster: KafkaCluster, topic: str, partitions: int) -> list[tuple[int, int]]:
    """(log start, end) of every partition."""
    from confluent_kafka import Consumer

    consumer = Consumer({**client_conf(cluster), "group.id": "chaos-marks", "socket.timeout.ms": 5000})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)]
    finally:
        consumer.close()


def delete_records(cluster: KafkaCluster, topic: str, partition: int, before: int) -> int:
    """Delete records below ``before``; returns the new log start."""
    admin = AdminClient({**client_conf(cluster), "socket.timeout.ms": 5000})
    futures = admin.delete_records([TopicPartition(topic, partition, before)], request_timeout=20)
    result = next(iter(futures.values())).result(timeout=30)
    return int(getattr(result, "low_watermark", before))


class Claims:
    """Subjects (``relay:<name>``, ``cluster:<name>``, ``s3``) some fault or operation is acting on.

    Shared by the fault nemesis and the operations nemesis, so that two of them never act on the
    same subject at once; anything else may overlap.
    """

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, *subjects: str) -> bool:
        """Take all of ``subjects``, or none if one is taken."""
        with self._lock:
            if any(s in self._busy for s in subjects):
                return False
            self._busy.update(subjects)
            return True

    def wait(self, subjects: Collection[str], timeout: float, stopping: threading.Event) -> bool:
        """Take all of ``subjects`` once they are free; False after ``timeout`` or once ``stopping`` is set."""
        deadline = time.monotonic() + timeout
        while not self.claim(*subjects):
            if time.monotonic() > deadline or stopping.wait(0.5):
                return False
        return True

    def release(self, *subjects: str) -> None:
        """Give ``subjects`` back."""
        with self._lock:
            self._busy.difference_update(subjects)

    def free(self, subjects: list[str]) -> list[str]:
        """Those of ``subjects`` nobody holds now."""
        with self._lock:
            return [s for s in subjects if s not in self._busy]


class Nemesis(threading.Thread):
    """Picks and runs faults until stopped; each fault runs in its own thread."""

    def __init__(
        self,
        *,
        seed: int,
        duration: float,
        interval: tuple[float, float],
        log: FaultLog,
        relays: dict[str, Relay],
        clusters: dict[str, KafkaCluster],
        s3: S3Server,
        feeders: dict[str, Feeder],
        copier: Copier,
        ledger: Ledger,
        session_timeout: float,
        kinds: Collection[str],
        on_gap_made: Callable[[int, int, int], None],
        claims: Claims,
    ) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.rng = random.Random(seed)
        self.duration = duration
        self.interval = interval
        self.log = log
        self.relays = relays
        self.clusters = clusters
        self.s3 = s3
        self.feeders = feeders
        self.copier = copier
        self.ledger = ledger  # of the mirror topic: its partitions and generation change under operations
        self.session_timeout = session_timeout
        self.kinds = [k for k in WEIGHTS if k in kinds]
        self.want_gap = "gap" in kinds
        self.on_gap_made = on_gap_made
        self.claims = claims
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.workers: list[threading.Thread] = []
        self.started = time.monotonic()
        self.gap_at = duration * self.rng.uniform(0.3, 0.6)
        self.gap_done = False
        self.active_source = "east"

    # -- claiming subjects ---------------------------------------------------------------------
    def _claim(self, *subjects: str) -> bool:
        return self.claims.claim(*subjects)

    def _release(self, *subjects: str) -> None:
        self.claims.release(*subjects)

    def _free(self, subjects: list[str]) -> list[str]:
        return self.claims.free(subjects)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        kinds = self.kinds
        weights = [WEIGHTS[k] for k in kinds]
        for _ in range(100_000):  # bounded; the stop event ends it long before
            if self.stopping.wait(self.rng.uniform(*self.interval)):
                break
            if self.want_gap and not self.gap_done and time.monotonic() - self.started >= self.gap_at:
                self.gap_done = True
                self._spawn("gap", self._gap, self.rng.random())
                continue
            if not kinds:
                continue
            kind = self.rng.choices(kinds, weights)[0]
            self._spawn(kind, getattr(self, f"_{kind}"), self.rng.random())
        self.workers = [w for w in self.workers if w.is_alive()]

    def _spawn(self, kind: str, fn: Callable[[random.Random], None], salt: float) -> None:
        # Each fault draws from its own generator, seeded from the nemesis's: the schedule stays the
        # same for a seed however long each fault takes.
        rng = random.Random(salt)

        def body() -> None:
            try:
                fn(rng)
            except Exception as exc:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                self.log.write(kind, "error", error=f"{type(exc).__name__}: {exc}")

        worker = threading.Thread(target=body, name=f"fault-{kind}", daemon=True)
        self.workers = [w for w in self.workers if w.is_alive()]
        self.workers.append(worker)
        worker.start()

    def stop(self, timeout: float = 300) -> bool:
        """Stop picking faults and wait for the running ones to heal; True if they all did."""
        self.stopping.set()
        self.join(30)
        deadline = time.monotonic() + timeout
        for worker in list(self.workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in self.workers)

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    @staticmethod
    def _retry(call: Callable[[], T], seconds: float = 300) -> T:
        """``call()``, again every 2 s while it fails (a cluster may be down or slow), for at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return call()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def _start(self, what: str, start: Callable[[], None]) -> None:
        """Start a stopped server again; a machine under load may need a second try."""
        try:
            start()
        except Exception as exc:
            self.log.write("restart", "retry", subject=what, error=str(exc)[:300])
            start()

    # -- faults ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _held_relay(self, kind: str, rng: random.Random, act: Callable[[Relay], None]) -> Iterator[Relay | None]:
        """Pick a relay no other fault holds, hold it from the supervisor, ``act`` on it; None if none is free.

        The alive check and ``act`` run under the relay's lock, so the supervisor cannot restart it in
        between; ``held`` keeps the supervisor away until the fault has healed it.
        """
        names = self._free([f"relay:{n}" for n in self.relays])
        if not names:
            yield None
            return
        subject = rng.choice(names)
        if not self._claim(subject):
            yield None
            return
        relay = self.relays[subject.split(":", 1)[1]]
        try:
            with relay.lock:
                relay.held = True
                running = relay.alive()
                if running:
                    act(relay)
            if not running:
                self.log.write(kind, "skip", relay=relay.name, why="not running")
            yield relay if running else None
        finally:
            relay.held = False
            self._release(subject)

    def _relay_kill(self, rng: random.Random) -> None:
        with self._held_relay("relay_kill", rng, Relay.kill9) as relay:
            if relay is None:
                return
            down = rng.uniform(0, 10)
            self.log.write("relay_kill", "begin", relay=relay.name, down_s=round(down, 2))
            self._sleep(down)
            relay.start()
            self.log.write("relay_kill", "end", relay=relay.name)

    def _relay_pause(self, rng: random.Random) -> None:
        with self._held_relay("relay_pause", rng, Relay.pause) as relay:
            if relay is None:
                return
            seconds = self.session_timeout + rng.uniform(1, 6)
            self.log.write("relay_pause", "begin", relay=relay.name, paused_s=round(seconds, 2))
            self._sleep(seconds)
            relay.resume()
            self.log.write("relay_pause", "end", relay=relay.name)

    def _which_source(self) -> tuple[str, str]:
        """(active, standby) of the mirror relay, from its metrics (the last known when it does not answer)."""
        metrics = self.relays["mirror"].scrape()
        for name in ("east", "west"):
            if metrics.get(f'kafka_lfs_relay_source_active{{source="{name}"}}') == 1.0:
                self.active_source = name
        active = self.active_source
        return active, "west" if active == "east" else "east"

    def _broker_kill(self, rng: random.Random) -> None:
        active, standby = self._which_source()
        role = rng.choice(["active source", "standby source", "target dr", "target plain"])
        name = {"active source": active, "standby source": standby, "target dr": "dr", "target plain": "plain"}[role]
        subject = f"cluster:{name}"
        if not self._claim(subject):
            self.log.write("broker_kill", "skip", cluster=name, role=role, why="busy")
            return
        cluster = self.clusters[name]
        try:
            down = rng.uniform(2, 30)
            cluster.kill()
            self.log.write("broker_kill", "begin", cluster=name, role=role, down_s=round(down, 2))
            self._sleep(down)
            self._start(name, lambda: cluster.start(timeout=180))
        finally:
            self.log.write("broker_kill", "end", cluster=name, role=role, up=cluster.alive())
            self._release(subject)

    def _s3_kill(self, rng: random.Random) -> None:
        if not self._claim("s3"):
            return
        try:
            down = rng.uniform(2, 30)
            self.s3.kill()
            self.log.write("s3_kill", "begin", down_s=round(down, 2))
            self._sleep(down)
            self._start("s3", lambda: self.s3.start(timeout=180))
        finally:
            self.log.write("s3_kill", "end", up=self.s3.alive())
            self._release("s3")

    def _burst(self, rng: random.Random) -> None:
        pipe = rng.choice(sorted(self.feeders))
        records = rng.randint(1000, 5000)
        self.feeders[pipe].burst(records)
        self.log.write("burst", "begin", topic=pipe, records=records)

    def _sources_up(self) -> bool:
        return all(self.clusters[n].alive() for n in ("east", "west"))

    def _delete_behind(self, rng: random.Random) -> None:
        if not self._claim("cluster:east", "cluster:west"):
            self.log.write("delete_behind", "skip", why="a source is busy")
            return
        if not self.ledger.topology.acquire(timeout=1):
            self._release("cluster:east", "cluster:west")
            self.log.write("delete_behind", "skip", why="the mirror topic is being changed")
            return
        try:
            if not self._sources_up():
                self.log.write("delete_behind", "skip", why="a source is down")
                return
            partitions = self.ledger.partitions
            partition = rng.randrange(partitions)
            committed = committed_positions(
                self.clusters["dr"], MIRROR_RELAY, MIRROR, since_ms=self.ledger.recreated_ms
            ).get(partition, 0)
            safe = min(committed, self.copier.position()[partition])
            low = watermarks(self.clusters["east"], MIRROR, partitions)[partition][0]
            if safe <= low:
                self.log.write("delete_behind", "skip", partition=partition, why="nothing behind the relay")
                return
            before = rng.randint(low + 1, safe)
            for name in ("east", "west"):
                delete_records(self.clusters[name], MIRROR, partition, before)
            self.log.write(
                "delete_behind", "begin", partition=partition, before=before, relay_committed=committed, log_start=low
            )
        finally:
            self.ledger.topology.release()
            self._release("cluster:east", "cluster:west")

    def _gap(self, rng: random.Random) -> None:
        """Stop the mirror relay, delete records ahead of its committed position on both sources, start it."""
        subjects = ["relay:mirror", "cluster:east", "cluster:west"]
        deadline = time.monotonic() + 180
        while not self._claim(*subjects):
            if time.monotonic() > deadline or self.stopping.is_set():
                self.log.write("gap", "skip", why="the mirror relay or a source stayed busy")
                return
            time.sleep(0.5)
        relay = self.relays["mirror"]
        if not self.ledger.topology.acquire(timeout=300):
            self._release(*subjects)
            self.log.write("gap", "skip", why="the mirror topic was being changed")
            return
        try:
            relay.held = True
            # SIGTERM drains for 30 s, then closing waits up to transaction_timeout + 10 s.
            code = relay.terminate(150, cause="nemesis")
            self.log.write("gap", "begin", relay=relay.name, drained_exit=code)
            # read_committed up to the end as it is now: a transaction the relay left open (it had to be
            # killed) holds the read back until the broker commits or aborts it, so this is exact.
            since = self.ledger.recreated_ms
            committed = self._retry(
                lambda: committed_positions(self.clusters["dr"], MIRROR_RELAY, MIRROR, timeout=300, since_ms=since)
            )
            partitions = self.ledger.partitions
            order = list(range(partitions))
            rng.shuffle(order)
            made = None
            for _ in range(60):  # up to ~30 s for records ahead of the position to reach both sources
                east = self._retry(lambda: watermarks(self.clusters["east"], MIRROR, partitions))
                copied = self.copier.position()
                for p in order:
                    if p not in committed:
                        continue
                    start = committed[p]
                    room = min(east[p][1], copied[p]) - start
                    if room >= 1:
                        made = (p, start, start + rng.randint(1, min(room, 200)))
                        break
                if made is not None:
                    break
                time.sleep(0.5)
            if made is None:
                self.log.write(
                    "gap",
                    "skip",
                    why="no records ahead of the relay's position",
                    committed=committed,
                    east=[hi for _, hi in east],
                    copied=copied,
                )
                return
            p, start, end = made
            for cluster in (self.clusters["east"], self.clusters["west"]):
                self._retry(functools.partial(delete_records, cluster, MIRROR, p, end))
            self.on_gap_made(p, start, end)
            self.log.write("gap", "deleted", partition=p, missing=f"[{start}, {end})", records=end - start)
            # Hold both sources until their brokers wrote the new log start to disk (every second in the
            # sandbox): a kill -9 before that brings the deleted records back.
            self._sleep(2 + rng.uniform(0, 3))
        finally:
            self.ledger.topology.release()
            if not relay.alive():
                relay.start()
            relay.held = False
            self.log.write("gap", "end", relay=relay.name)
            self._release(*subjects)
