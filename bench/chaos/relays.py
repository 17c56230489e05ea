"""The relays under test: their configs, and each one as a supervised child process.

A relay that exits by itself is restarted after a short pause, as a service manager would do,
and the exit (code, the error line it printed, when) is kept for the checker, which must explain
every one of them by a fault. A relay the nemesis holds (killed, paused, stopped for the gap) is
left alone until the nemesis lets it go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.chaos.model import GROUP_RELAY, HYDRATE_RELAY, HYDRATED, MIRROR, MIRROR_RELAY, ORDERS, THRESHOLD
from kafka_lfs_relay.sandbox import KafkaCluster, RelayProcess, S3Server, cluster_entry, relay_env

ROOT = Path(__file__).resolve().parents[2]
LFS_PREFIX = "chaos"


def gap_policy_supported() -> bool:
    """Whether this relay knows ``on_gap``; the harness runs against either version."""
    from relay.settings import TopicConfig

    return "on_gap" in {f.name for f in dataclasses.fields(TopicConfig)}


def _common(name: str, metrics_port: int) -> dict[str, Any]:
    return {
        "name": name,
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "log": {"level": "info", "format": "json"},
        # Health checks as the failover tests run them: a dead source is left within ~3 s.
        "source_pool": {"healthcheck_interval": "500ms", "request_timeout": "1s", "min_dwell": "5s"},
        "max_in_flight": "96MiB",
    }


def _target(cluster: KafkaCluster, name: str, kind: str) -> dict[str, Any]:
    return {
        **cluster_entry(cluster, name),
        "type": kind,
        "batch": {"max_records": 2000, "linger": "20ms", "max_bytes": "32MiB"},
        "retry": {"backoff": {"min": "100ms", "max": "2s"}},
        # The relays create their target topics, as a new user's would: partitions that follow the
        # source and timestamp limits are the relay's business, and the operations test them.
        "create_topics": True,
    }


def s3_connection(s3: S3Server) -> dict[str, Any]:
    """The ``s3`` section for the sandbox's server."""
    return {
        "endpoint_url": s3.endpoint_url,
        "region": s3.region,
        "path_style": True,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
        "connect_timeout": "2s",
        "read_timeout": "20s",
    }


def mirror_config(
    east: KafkaCluster, west: KafkaCluster, dr: KafkaCluster, s3: S3Server, port: int, on_gap: str | None
) -> dict[str, Any]:
    """Failover between east and west into ``dr`` through the lfs target (large records to S3)."""
    config = _common(MIRROR_RELAY, port)
    target = _target(dr, "dr", "lfs")
    target["lfs"] = {
        "threshold": THRESHOLD,
        "s3": {**s3_connection(s3), "bucket": s3.bucket, "prefix": LFS_PREFIX},
    }
    config.update(
        {
            "mode": "failover",
            "sources": [cluster_entry(east, "east"), cluster_entry(west, "west")],
            "topics": [{"source": MIRROR}],
            "target": target,
        }
    )
    if on_gap is not None:
        config["on_gap"] = on_gap
    return config


def hydrate_config(dr: KafkaCluster, plain: KafkaCluster, s3: S3Server, port: int) -> dict[str, Any]:
    """The envelope topic on ``dr`` hydrated into ``plain``."""
    config = _common(HYDRATE_RELAY, port)
    target = _target(plain, "plain", "hydrate")
    target["hydrate"] = {
        "allowed_buckets": [{"bucket": s3.bucket, "prefixes": [f"{LFS_PREFIX}/"]}],
        "s3": s3_connection(s3),
    }
    config.update(
        {
            "mode": "single",
            "sources": [cluster_entry(dr, "dr")],
            "topics": [{"source": MIRROR, "target": HYDRATED}],
            "target": target,
        }
    )
    return config


def group_config(east: KafkaCluster, plain: KafkaCluster, port: int, session_timeout: float) -> dict[str, Any]:
    """One of the instances sharing ``orders`` through a consumer group, into ``plain``."""
    config = _common(GROUP_RELAY, port)
    config.update(
        {
            "mode": "single",
            "sources": [cluster_entry(east, "east")],
            "topics": [{"source": ORDERS}],
            "target": _target(plain, "plain", "kafka"),
            "group": {"id": "chaos-group", "session_timeout": f"{session_timeout:g}s"},
        }
    )
    return config


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    """Write a relay config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def variant(path: Path, suffix: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the config at ``path``, changed by ``change``, next to it as ``<stem>-<suffix>.yml``."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(config)
    return write_yaml(path.with_name(f"{path.stem}-{suffix}.yml"), config)


SMALL_IN_FLIGHT = {"mirror": ("4MiB", "1MiB"), "hydrate": ("48MiB", "4MiB"), "group": ("1MiB", "256KiB")}
"""Per role, a small ``max_in_flight`` and the ``batch.max_bytes`` that fits it (rolling restarts).
The hydrator's is larger: it refuses a claim over a third of ``max_in_flight`` (8 MiB records)."""


def small_in_flight(role: str) -> Callable[[dict[str, Any]], None]:
    """A change for :func:`variant`: the role's small ``max_in_flight``."""
    in_flight, batch = SMALL_IN_FLIGHT[role]

    def change(config: dict[str, Any]) -> None:
        config["max_in_flight"] = in_flight
        config["target"]["batch"]["max_bytes"] = batch

    return change


@dataclass
class Run:
    """One start of a relay process and how it ended."""

    number: int
    started: float
    log_offset: int
    args: tuple[str, ...] = ()
    ended: float | None = None
    code: int | None = None
    cause: str = ""  # "nemesis" (killed on purpose), "harness" (stopped on purpose), "exited" (by itself)
    error_line: str = ""


@dataclass
class Relay:
    """One relay process, restarted when it exits unless the nemesis or the harness holds it."""

    name: str
    role: str  # mirror | hydrate | group
    config: Path
    metrics_port: int
    log_path: Path
    runs: list[Run] = field(default_factory=list)
    held: bool = False
    paused: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    restart_at: float | None = None
    process: RelayProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.process = RelayProcess(self.config, log_path=self.log_path, name=self.name, env=relay_env(ROOT), cwd=ROOT)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The current run's process (None before the first start)."""
        return self.process.proc

    def start(self, *args: str, config: Path | None = None) -> None:
        """Start a new run (appending to the log), with ``config`` instead of the relay's own for this run."""
        with self.lock:
            started = time.time()
            # The harness switches a relay to another config by assigning ``config`` (the operator's
            # restart with on_gap: skip): every start takes the one assigned last.
            self.process.config_path = self.config
            self.process.start(*args, config=config)
            self.runs.append(Run(self.process.runs, started, self.process.log_offset, tuple(args)))
            self.restart_at = None

    def alive(self) -> bool:
        """True while the current run's process is there."""
        return self.process.alive()

    def _end(self, code: int | None, cause: str) -> None:
        run = self.runs[-1]
        if run.ended is None:
            run.ended, run.code, run.cause = time.time(), code, cause
            run.error_line = self.error_line(run)

    def kill9(self, cause: str = "nemesis") -> None:
        """SIGKILL the process group and reap it."""
        with self.lock:
            if self.proc is None:
                return
            self.process.kill9()
            self.paused = False
            self._end(self.proc.returncode, cause)

    def terminate(self, timeout: float, cause: str = "harness") -> int | None:
        """SIGTERM (the relay drains), SIGKILL after ``timeout``; the exit code."""
        with self.lock:
            if self.proc is None:
                return None
            if self.process.alive() and self.process.terminate(timeout) is None:
                self.process.kill9()
                cause = f"{cause}: did not drain within {timeout:.0f}s"
            self.paused = False
            self._end(self.proc.returncode, cause)
            return self.proc.returncode

    def wait(self, timeout: float) -> int | None:
        """Wait for the run to end by itself (``--stop-at-end``); None if it did not in time (then killed)."""
        code = self.process.wait(timeout)
        if code is None:
            self.kill9(cause=f"harness: not done within {timeout:.0f}s")
            return None
        with self.lock:
            self._end(code, "exited")
        return code

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and answers nothing."""
        with self.lock:
            self.process.pause()
            self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        with self.lock:
            self.process.resume()
            self.paused = False

    def log_segment(self, run: Run) -> str:
        """What the relay printed during ``run``."""
        if not self.log_path.exists():
            return ""
        following = [r.log_offset for r in self.runs if r.number == run.number + 1]
        with self.log_path.open("rb") as fh:
            fh.seek(run.log_offset)
            data = fh.read(following[0] - run.log_offset) if following else fh.read()
        return data.decode("utf-8", "replace")

    def error_line(self, run: Run) -> str:
        """The one line a stopping relay prints on stderr (``kafka-lfs-relay: ...``), if any."""
        lines = [line for line in self.log_segment(run).splitlines() if line.startswith("kafka-lfs-relay:")]
        return lines[-1] if lines else ""

    def scrape(self) -> dict[str, float]:
        """The relay's metrics now; empty if it does not answer."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def relayed(self) -> float:
        """Records the running process has relayed (its metrics), 0 if it does not answer."""
        return sum(v for k, v in self.scrape().items() if k.startswith("kafka_lfs_relay_records_relayed_total"))

    def record_exit(self) -> Run | None:
        """If the current run ended by itself and nobody noted it yet, note it (cause "exited") and return it."""
        with self.lock:
            if self.proc is None or self.proc.poll() is None or not self.runs or self.runs[-1].ended is not None:
                return None
            self._end(self.proc.returncode, "exited")
            return self.runs[-1]

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line of every run."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


class Supervisor(threading.Thread):
    """Restarts relays that exited by themselves, 1-3 s later; bounded by ``max_restarts`` per relay."""

    def __init__(self, relays: list[Relay], on_exit: Any, max_restarts: int = 200) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.relays = relays
        self.on_exit = on_exit
        self.max_restarts = max_restarts
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            for relay in self.relays:
                with relay.lock:
                    if relay.held or relay.proc is None:
                        continue
                    code = relay.proc.poll()
                    if code is not None and relay.runs[-1].ended is None:
                        relay._end(code, "exited")
                        self.on_exit(relay, relay.runs[-1])
                        if code == 2:
                            self.errors.append(f"{relay.name}: configuration refused: {relay.runs[-1].error_line}")
                        relay.restart_at = time.monotonic() + 2.0
                    if relay.restart_at is not None and time.monotonic() >= relay.restart_at:
                        if len(relay.runs) >= self.max_restarts:
                            self.errors.append(f"{relay.name}: more than {self.max_restarts} runs")
                            relay.restart_at = None
                            continue
                        relay.start()
