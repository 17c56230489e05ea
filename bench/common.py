"""What every benchmark scenario shares: clusters, data, measured child processes, results.

Measuring a contender
  Every contender (our relay, MirrorMaker 2, Kafka's perf tools, the plain confluent-kafka loop)
  runs as its own child process, so its cost is its own: *CPU seconds* are the process's user +
  system time (all threads) and *peak RSS* its high-water mark of resident memory (``VmHWM``).
  For a process that exits by itself, CPU comes from ``wait4`` (``ru_utime + ru_stime``) and
  ``VmHWM`` is read from ``/proc/<pid>/status`` every 20 ms while it runs (``ru_maxrss`` cannot be
  used: Linux carries the parent's high-water mark across the fork/exec into it). For a process
  the benchmark stops (MirrorMaker 2, a relay left running) both are read from ``/proc`` at the
  moment the work is done, before it is stopped.

Rates
  Target topics are created with ``message.timestamp.type=LogAppendTime``, so every record on the
  target carries the broker's append time whoever wrote it. The *steady* rate is records divided
  by the time from the first to the last record appended to the target (it leaves out process
  start-up: JVM, connector start, Python imports); the *wall* rate divides by the time from process
  start to the work being done. Both are reported; the tables show the steady rate.

Results
  A scenario writes ``build/bench/results/<name>.json`` with :func:`write_result`: a title, column
  names, rows (dicts keyed by column), settings, notes, goals and optional further sections (a
  title, columns, rows and notes each, rendered under the main table). ``bench/report.py`` renders every
  such file, so other scenarios (the LFS ones) only need to write the same shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from kafka_lfs_relay.sandbox import KAFKA_VERSION, KafkaCluster, kafka_distribution
from kafka_lfs_relay.sandbox.distribution import java_executable, tools_classpath

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
RESULTS = BUILD / "results"
WORK = BUILD / "work"

MIB = 1024 * 1024
RECORD_SIZE = 1024
# The JVM options Kafka's own scripts use (kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS).
KAFKA_JVM_PERFORMANCE_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)
# Producer batching shared by every contender that writes to the target (it is our relay's own).
PRODUCER_BATCHING = {"linger.ms": "5", "batch.size": "1000000", "compression.type": "lz4", "acks": "all"}
# Fetch sizes of our relay's source consumer, given to every contender that reads the source.
CONSUMER_FETCH = {"fetch.max.bytes": str(64 * MIB), "max.partition.fetch.bytes": str(8 * MIB)}


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop every cluster and child we started."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def log(msg: str) -> None:
    """One progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


# -- the machine -----------------------------------------------------------------------------------
def _java_version() -> str:
    proc = subprocess.run([java_executable(), "-version"], capture_output=True, text=True, check=False)
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0].strip() if first else "unknown"


def _mem_total_gib() -> float:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def foreign_load() -> dict[str, Any]:
    """Other heavy processes on the machine right now (not ours): a hint that figures are noisy."""
    mine = {os.getpid()}
    others: list[str] = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        pid = int(pid_dir.name)
        if pid in mine:
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in mine:
            continue
        if any(word in cmd for word in ("java ", "pytest", "kafka_lfs_relay.cli", "weed ")):
            others.append(cmd.split(" -cp ")[0][:80])
    load1, load5, _ = os.getloadavg()
    return {"other_processes": len(others), "loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2)}


def machine_info() -> dict[str, Any]:
    """Cores, memory and the versions of everything involved."""
    import confluent_kafka

    load = foreign_load()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_total_gib(), 1),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "java": _java_version(),
        "kafka": KAFKA_VERSION,
        "shared": load["other_processes"] > 0,
        "load_at_start": load,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- measured child processes ----------------------------------------------------------------------
@dataclass
class ProcStats:
    """What one child process cost: wall seconds since start, CPU seconds, peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int
    returncode: int | None = None


_TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / _TICK  # utime, stime (fields 14 and 15)
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


class Child:
    """A measured child process in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.stats: ProcStats | None = None
        self._hwm = 0

    @property
    def pid(self) -> int:
        """The process id (after :meth:`start`)."""
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Child:
        """Start the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.started = time.monotonic()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def sample(self) -> ProcStats:
        """CPU and peak RSS so far, with the wall time since start."""
        cpu, hwm = proc_sample(self.pid)
        self._hwm = max(self._hwm, hwm)
        return ProcStats(time.monotonic() - self.started, cpu, self._hwm)

    def _note_hwm(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.sample()

    def _reap(self, block: bool) -> ProcStats | None:
        if self.stats is not None:
            return self.stats
        self._note_hwm()
        pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        assert self.popen is not None
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self.stats = ProcStats(
            time.monotonic() - self.started,
            usage.ru_utime + usage.ru_stime,
            self._hwm,
            self.popen.returncode,
        )
        return self.stats

    def alive(self) -> bool:
        """True while the process runs (reaping it, with its resource usage, once it exits)."""
        return self.popen is not None and self._reap(block=False) is None

    def wait(self, timeout: float) -> ProcStats:
        """Wait for the process to exit by itself; its stats from ``wait4``."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self._reap(block=False)
            if stats is not None:
                return stats
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.02)

    def stop(self, grace: float = 30.0) -> ProcStats:
        """SIGTERM the process group, SIGKILL after ``grace``; its stats from ``wait4``."""
        if self.popen is None:
            return ProcStats(0.0, 0.0, 0)
        if self.alive():
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                self.kill()
        stats = self._reap(block=True)
        assert stats is not None
        return stats

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.popen is not None and self.stats is None:
            self._signal(signal.SIGKILL)
            self._reap(block=True)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def java_argv(main: str, args: Sequence[str], heap: Sequence[str], log4j: Path | None = None) -> list[str]:
    """A ``java`` command line for a class on the tools classpath, with Kafka's script JVM options."""
    argv = [java_executable(), *heap, *KAFKA_JVM_PERFORMANCE_OPTS]
    if log4j is not None:
        argv.append(f"-Dlog4j2.configurationFile={log4j}")
    return [*argv, "-cp", tools_classpath(), main, *args]


def write_log4j(path: Path, log_file: Path, info_loggers: Sequence[str] = ()) -> Path:
    """A log4j2 config that sends everything at WARN (and ``info_loggers`` at INFO) to ``log_file``."""
    lines = [
        "status = error",
        "appender.file.type = File",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for i, name in enumerate(info_loggers):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = INFO"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- clusters --------------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_clusters(names: Sequence[str], scenario: str) -> Iterator[dict[str, KafkaCluster]]:
    """Start brand-new sandbox clusters (fresh data directories) and stop them all at the end."""
    root = WORK / f"{scenario}-{uuid.uuid4().hex[:6]}"
    dist = kafka_distribution()
    clusters: dict[str, KafkaCluster] = {}
    try:
        for name in names:
            log(f"starting cluster {name}")
            cluster = KafkaCluster.create(name, root / name, dist)
            clusters[name] = cluster
            cluster.start()
        yield clusters
    finally:
        for cluster in reversed(list(clusters.values())):
            with contextlib.suppress(Exception):
                cluster.resume()
                cluster.stop(grace=20)
        shutil.rmtree(root, ignore_errors=True)


def admin(cluster: KafkaCluster) -> AdminClient:
    """An AdminClient for ``cluster``."""
    return AdminClient(cluster.client_conf())


def create_topic(cluster: KafkaCluster, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
    """Create a topic (replication factor 1) and wait for it."""
    client = admin(cluster)  # kept referenced until the future completes
    fut = client.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    fut[name].result(timeout=60)


LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}


def delete_topics(cluster: KafkaCluster, keep: Sequence[str] = ()) -> None:
    """Delete every non-internal topic except ``keep`` and wait until they are gone."""
    client = admin(cluster)
    names = [t for t in client.list_topics(timeout=15).topics if not t.startswith("__") and t not in keep]
    if not names:
        return
    for fut in client.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            fut.result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = set(names) & set(client.list_topics(timeout=15).topics)
        if not left:
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics not deleted on {cluster.name}: {sorted(left)}")


def end_offsets(cluster: KafkaCluster, topic: str, partitions: int) -> list[int]:
    """High watermarks of every partition."""
    consumer = Consumer({**cluster.client_conf(), "group.id": "bench-offsets"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


class OffsetWatcher:
    """Polls the sum of a topic's end offsets (a cheap way to see a copy finish)."""

    def __init__(self, cluster: KafkaCluster, topic: str, partitions: int) -> None:
        self.consumer = Consumer({**cluster.client_conf(), "group.id": "bench-watch"})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int:
        """Sum of the high watermarks now (0 for a partition that does not answer)."""
        total = 0
        for tp in self.tps:
            with contextlib.suppress(KafkaException):
                total += self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1]
        return total

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def append_span(cluster: KafkaCluster, topic: str, partitions: int) -> tuple[float, float]:
    """(first, last) broker append time in seconds of a LogAppendTime topic, via ListOffsets."""
    client = admin(cluster)
    first = {TopicPartition(topic, p): OffsetSpec.for_timestamp(0) for p in range(partitions)}
    last = {TopicPartition(topic, p): OffsetSpec.max_timestamp() for p in range(partitions)}
    firsts = [f.result(timeout=30).timestamp for f in client.list_offsets(first, request_timeout=30).values()]
    lasts = [f.result(timeout=30).timestamp for f in client.list_offsets(last, request_timeout=30).values()]
    firsts = [t for t in firsts if t >= 0]
    lasts = [t for t in lasts if t >= 0]
    if not firsts or not lasts:
        raise RuntimeError(f"{topic} on {cluster.name} holds no timestamped records")
    return min(firsts) / 1000, max(lasts) / 1000


# -- data ------------------------------------------------------------------------------------------
HEADER_NAME = "source"
HEADER_VALUE = "bench"
JSON_FIELD = "a.b"
JSON_VALUE = "keep"


def make_values(count: int, size: int = RECORD_SIZE, distinct: int = 4096) -> Callable[[int], bytes]:
    """A function i -> a ``size``-byte JSON value with ``{"a": {"b": "keep"}}`` and random padding.

    The padding is random base64 text, so lz4 compresses it about as little as it does the
    random letters of Kafka's ``kafka-producer-perf-test``.
    """
    import base64

    pads = [base64.b64encode(os.urandom(size)).decode()[:size] for _ in range(min(count, distinct))]
    head = '{"id":"%010d","a":{"b":"keep"},"pad":"'
    room = size - len(head % 0) - 2

    def value(i: int) -> bytes:
        return (head % i + pads[i % len(pads)][:room] + '"}').encode()

    assert len(value(0)) == size
    return value


def fill_topic(
    clusters: Sequence[KafkaCluster],
    topic: str,
    count: int,
    partitions: int,
    size: int = RECORD_SIZE,
    with_header: bool = True,
) -> float:
    """Write ``count`` records round-robin over ``partitions`` to every cluster (same order); returns seconds."""
    value = make_values(count, size)
    headers = [(HEADER_NAME, HEADER_VALUE.encode())] if with_header else None
    producers = [
        Producer(
            {
                **c.client_conf(),
                **PRODUCER_BATCHING,
                "linger.ms": 20,
                "enable.idempotence": True,
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 1_048_576,
            }
        )
        for c in clusters
    ]
    started = time.monotonic()
    ts = int(time.time() * 1000)
    for i in range(count):
        v = value(i)
        for producer in producers:
            while True:
                try:
                    producer.produce(topic, v, None, partition=i % partitions, headers=headers, timestamp=ts)
                    break
                except BufferError:
                    producer.poll(0.05)
        if i % 10_000 == 0:
            ts = int(time.time() * 1000)
            for producer in producers:
                producer.poll(0)
    for producer in producers:
        if producer.flush(300) != 0:
            raise RuntimeError(f"could not write {topic}")
    return time.monotonic() - started


# -- our relay -------------------------------------------------------------------------------------
def cluster_entry(cluster: KafkaCluster, name: str) -> dict[str, Any]:
    """A relay config ``sources[]``/``target`` entry."""
    return {"name": name, "bootstrap_servers": cluster.bootstrap_servers}


def relay_argv(config_path: Path, *extra: str) -> list[str]:
    """The real CLI: ``kafka-lfs-relay run --config F`` with this interpreter.

    ``$BENCH_RELAY_MODULE`` (default ``kafka_lfs_relay.cli``) names another module with the same command
    line, to measure a candidate change to the relay against the same scenario.
    """
    module = os.environ.get("BENCH_RELAY_MODULE", "kafka_lfs_relay.cli")
    return [sys.executable, "-m", module, "run", "--config", str(config_path), *extra]


def revision_tree(rev: str) -> Path:
    """The relay's packages as they were at git revision ``rev``, unpacked once into the work folder.

    For A/B runs against an earlier release in one invocation (``git archive``, so the revision
    must be in this clone's history).
    """
    out = WORK / f"rev-{rev}"
    if not out.exists():
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", rev], capture_output=True, text=True, check=True
        ).stdout.split()
        packages = [n for n in ("relay", "lfs", "targets", "filters", "kafka_lfs_relay") if n in names]
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *packages], capture_output=True, check=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(out, filter="data")
    return out


def revision_argv(tree: Path, config_path: Path, *extra: str) -> list[str]:
    """The ``run`` command line of the relay unpacked in ``tree`` (its CLI module moved between releases).

    Run it with ``cwd=tree``: ``python -m`` puts the working directory first on the path.
    """
    module = "kafka_lfs_relay.cli" if (tree / "kafka_lfs_relay" / "cli.py").exists() else "relay.cli"
    return [sys.executable, "-m", module, "run", "--config", str(config_path), *extra]


def revision_env(tree: Path) -> dict[str, str]:
    """The environment of the relay unpacked in ``tree``: that tree on ``PYTHONPATH``, not this repository."""
    return {**relay_env(), "PYTHONPATH": str(tree)}


def relay_env() -> dict[str, str]:
    """The environment our relay runs with (the repository first on ``PYTHONPATH``)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    """Write a YAML file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Result:
    """One scenario's outcome, as the report renders it."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    # Further tables under the main one: each {"title", "columns", "rows", "notes"}.
    sections: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    chart: dict[str, Any] = field(default_factory=dict)


def write_result(result: Result) -> Path:
    """Write ``build/bench/results/<name>.json`` (and print where)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2, default=str), encoding="utf-8")
    log(f"result written to {path}")
    return path


def now_text() -> str:
    """Local time, for the report."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def fmt(value: Any) -> str:
    """A number rounded for a table; anything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def common_args(parser: Any, runs: int) -> None:
    """``--runs`` (median of how many) for every scenario."""
    parser.add_argument(
        "--runs", type=int, default=runs, help=f"runs per contender; figures are medians (default {runs})"
    )


def check_no_leftovers(children: Sequence[Child]) -> None:
    """Fail loudly if a child we started is still alive."""
    alive = [c.name for c in children if c.popen is not None and c.stats is None and c.alive()]
    if alive:
        raise RuntimeError(f"still running: {alive}")
