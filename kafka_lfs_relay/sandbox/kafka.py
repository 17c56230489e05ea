"""Single-node KRaft clusters of real Apache Kafka on loopback, with the fault primitives tests need."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka_lfs_relay.sandbox.distribution import KafkaDistribution, java_executable
from kafka_lfs_relay.sandbox.process import ManagedProcess, SandboxError, free_port, log_tail, port_open, wait_until
from kafka_lfs_relay.sandbox.tls import make_broker_tls
from relay.logs import librdkafka_logger

HOST = "127.0.0.1"

_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


@dataclass
class AuthProfile:
    """A SASL_SSL listener with SCRAM-SHA-512 users and a CA the sandbox generated.

    With ``acls`` the broker also runs KRaft's StandardAuthorizer with no ACL granted: the user
    ``username`` may do nothing until ACLs allow it, while ``admin_username`` is a super user
    (:meth:`KafkaCluster.admin_config`) who grants them. The broker's own listeners (inter-broker,
    controller) stay plaintext on loopback and are super users too.
    """

    username: str = "relay"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    store_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    acls: bool = False
    admin_username: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))


@dataclass
class ClusterSpec:
    """Everything needed to (re)start one cluster; persisted so ``sandbox down`` can find it."""

    name: str
    workdir: Path
    broker_port: int
    controller_port: int
    internal_port: int | None = None
    auth: AuthProfile | None = None
    heap: str = "512m"
    pid: int | None = None

    def to_state(self) -> dict[str, Any]:
        """A JSON-serializable form of the spec."""
        return {
            "name": self.name,
            "workdir": str(self.workdir),
            "broker_port": self.broker_port,
            "controller_port": self.controller_port,
            "internal_port": self.internal_port,
            "auth": None if self.auth is None else vars(self.auth),
            "heap": self.heap,
            "pid": self.pid,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClusterSpec:
        """The inverse of :meth:`to_state`."""
        auth = state.get("auth")
        return cls(
            name=state["name"],
            workdir=Path(state["workdir"]),
            broker_port=state["broker_port"],
            controller_port=state["controller_port"],
            internal_port=state.get("internal_port"),
            auth=None if auth is None else AuthProfile(**auth),
            heap=state.get("heap", "512m"),
            pid=state.get("pid"),
        )


class KafkaCluster:
    """One broker+controller KRaft process with its own data directory, log file and ports.

    ``stop``/``kill``/``pause``/``resume``/``start`` are the primitives of the crash and failover
    tests: a restart reuses the same ports and data, so clients reconnect to the same address and
    find their records again.
    """

    def __init__(self, spec: ClusterSpec, dist: KafkaDistribution | None) -> None:
        self.spec = spec
        self.dist = dist
        self._proc: ManagedProcess | None = None
        if spec.pid is not None:
            self._proc = ManagedProcess(spec.name, [], self.log_path, spec.workdir)
            self._proc.pid = spec.pid

    @classmethod
    def create(
        cls,
        name: str,
        workdir: Path,
        dist: KafkaDistribution,
        auth: bool = False,
        heap: str = "512m",
        acls: bool = False,
    ) -> KafkaCluster:
        """A new, not yet started cluster with fresh ports under ``workdir`` (``acls`` implies ``auth``)."""
        auth = auth or acls
        # Absolute, because the broker runs with workdir as its cwd and is given paths inside it.
        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        spec = ClusterSpec(
            name=name,
            workdir=workdir,
            broker_port=free_port(),
            controller_port=free_port(),
            internal_port=free_port() if auth else None,
            auth=AuthProfile(acls=acls) if auth else None,
            heap=heap,
        )
        return cls(spec, dist)

    # -- endpoints ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The cluster's name in the sandbox."""
        return self.spec.name

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener (SASL_SSL for the auth profile)."""
        return f"{HOST}:{self.spec.broker_port}"

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.spec.workdir / "server.log"

    @property
    def ca_path(self) -> Path:
        """PEM file of the sandbox CA (auth profile only)."""
        return self.spec.workdir / "tls" / "ca.pem"

    def client_config(self) -> dict[str, str]:
        """librdkafka properties a client needs to connect, bootstrap servers included."""
        conf = {"bootstrap.servers": self.bootstrap_servers}
        auth = self.spec.auth
        if auth is not None:
            conf.update(
                {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": auth.username,
                    "sasl.password": auth.password,
                    "ssl.ca.location": str(self.ca_path),
                }
            )
        return conf

    def admin_config(self) -> dict[str, str]:
        """:meth:`client_config` as the super user of an ``acls`` cluster (the one who grants ACLs)."""
        auth = self.spec.auth
        if auth is None or not auth.acls:
            raise SandboxError(f"cluster {self.name} runs no authorizer; it has no admin user")
        return {**self.client_config(), "sasl.username": auth.admin_username, "sasl.password": auth.admin_password}

    def client_conf(self) -> dict[str, Any]:
        """:meth:`client_config` plus ``logger``, for a confluent-kafka client made in this process.

        librdkafka's lines then go through structlog (:func:`relay.logs.librdkafka_logger`)
        instead of straight to stderr, where they would interleave with a test's, the demo's or
        a benchmark's output once this cluster is stopped or killed.
        """
        return {**self.client_config(), "logger": librdkafka_logger()}

    def info(self) -> dict[str, Any]:
        """The endpoint as printed by ``sandbox up --json``."""
        props = self.client_config()
        return {
            "name": self.name,
            "bootstrap_servers": props.pop("bootstrap.servers"),
            "kafka": props,
            "log": str(self.log_path),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def _require_dist(self) -> KafkaDistribution:
        if self.dist is None:
            raise SandboxError(f"cluster {self.name}: no Kafka distribution to start it with")
        return self.dist

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        dist = self._require_dist()
        return [
            java_executable(),
            f"-Xms{heap}" if main == "kafka.Kafka" else "-Xms64m",
            f"-Xmx{heap}",
            # NIO copies every heap buffer it reads or writes through a temporary direct buffer
            # as large as that heap buffer, cached per thread. Records of 64 MiB made a few broker
            # threads cache enough to exhaust the default direct-memory limit (= -Xmx); a failed
            # log append then took the log directory offline. The cache must stay: without it a
            # 64 MiB request is read through a fresh, zeroed 64 MiB buffer per socket read, and
            # the broker took 8 s per record. Direct memory is reserved only when used, and 4 GiB
            # covers a cached buffer of the largest record (100 MiB) for each of its ~11 threads.
            "-XX:MaxDirectMemorySize=4g",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.spec.workdir / 'log4j2.properties'}",
            "-cp",
            dist.classpath,
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        spec = self.spec
        data = spec.workdir / "data"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{spec.controller_port}",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=3",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Large test records (up to 64 MiB) must fit in one request.
            "socket.request.max.bytes=209715200",
            "auto.create.topics.enable=false",
            "log.segment.bytes=268435456",
            # A log start moved by delete_records (or retention) is written to disk every minute by
            # default; a kill -9 before that brought the deleted records back on a one-node cluster
            # (a replicated one keeps it on the other replicas). Every second here.
            "log.flush.start.offset.checkpoint.interval.ms=1000",
        ]
        if spec.auth is None:
            lines += [
                f"listeners=PLAINTEXT://{HOST}:{spec.broker_port},CONTROLLER://{HOST}:{spec.controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{spec.broker_port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        else:
            tls = spec.workdir / "tls"
            lines += [
                f"listeners=INTERNAL://{HOST}:{spec.internal_port},CONTROLLER://{HOST}:{spec.controller_port},"
                f"EXTERNAL://{HOST}:{spec.broker_port}",
                f"advertised.listeners=INTERNAL://{HOST}:{spec.internal_port},EXTERNAL://{HOST}:{spec.broker_port}",
                "listener.security.protocol.map=INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:SASL_SSL",
                "inter.broker.listener.name=INTERNAL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.external.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"listener.name.external.ssl.keystore.location={tls / 'broker.p12'}",
                "listener.name.external.ssl.keystore.type=PKCS12",
                f"listener.name.external.ssl.keystore.password={spec.auth.store_password}",
                f"listener.name.external.ssl.key.password={spec.auth.store_password}",
            ]
            if spec.auth.acls:
                lines += [
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    f"super.users=User:{spec.auth.admin_username};User:ANONYMOUS",
                    "allow.everyone.if.no.acl.found=false",
                ]
        path = spec.workdir / "server.properties"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        (spec.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path), encoding="utf-8")
        return path

    def _format(self, config: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # "=" form: a generated id may start with "-", which argparse would take for an option.
        args = ["format", f"--cluster-id={cluster_id}", "-c", str(config)]
        auth = self.spec.auth
        if auth is not None:
            args += ["--add-scram", f"SCRAM-SHA-512=[name={auth.username},password={auth.password}]"]
            if auth.acls:
                args += ["--add-scram", f"SCRAM-SHA-512=[name={auth.admin_username},password={auth.admin_password}]"]
        proc = subprocess.run(self._java("kafka.tools.StorageTool", *args), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SandboxError(f"cluster {self.name}: formatting storage failed: {(proc.stdout + proc.stderr).strip()}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker (formatting storage on first start) and wait until it serves metadata.

        A port taken by someone else between allocation and bind is retried with fresh ports, but
        only on a first start: a restart must keep its address.
        """
        first = not (self.spec.workdir / "data" / "meta.properties").exists()
        for attempt in range(3):
            config = self._write_config()
            if first:
                if self.spec.auth is not None and not (self.spec.workdir / "tls" / "broker.p12").exists():
                    make_broker_tls(self.spec.workdir / "tls", self.spec.auth.store_password, self.name)
                self._format(config)
            proc = ManagedProcess(
                self.name,
                self._java("kafka.Kafka", str(config), heap=self.spec.heap),
                self.log_path,
                self.spec.workdir,
            )
            proc.start()
            self._proc = proc
            self.spec.pid = proc.pid
            try:
                wait_until(f"Kafka cluster {self.name}", self._ready, timeout, proc)
                return
            except SandboxError:
                in_use = "Address already in use" in log_tail(self.log_path, 200)
                proc.kill()
                if not (first and in_use and attempt < 2):
                    raise
                self._reallocate_ports()
        raise SandboxError(f"Kafka cluster {self.name}: could not start")  # pragma: no cover

    def _reallocate_ports(self) -> None:
        shutil.rmtree(self.spec.workdir / "data", ignore_errors=True)
        self.spec.broker_port = free_port()
        self.spec.controller_port = free_port()
        if self.spec.internal_port is not None:
            self.spec.internal_port = free_port()

    def _ready(self) -> bool:
        if not port_open(HOST, self.spec.broker_port):
            return False
        from confluent_kafka.admin import AdminClient

        # A starting broker refuses or drops connections: expected here, so every line is debug.
        conf: dict[str, Any] = {
            **(self.admin_config() if self.spec.auth is not None and self.spec.auth.acls else self.client_config()),
            "socket.timeout.ms": 2000,
            "logger": librdkafka_logger(quiet=True),
        }
        try:
            md = AdminClient(conf).list_topics(timeout=2)
        except Exception:
            return False
        return bool(md.brokers)

    def stop(self, grace: float = 20.0) -> None:
        """Graceful shutdown (SIGTERM), escalating to SIGKILL after ``grace`` seconds."""
        if self._proc is not None:
            self._proc.stop(grace)
        self.spec.pid = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without flushing, as in a host crash of the process."""
        if self._proc is not None:
            self._proc.kill()
        self.spec.pid = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, like a hung or partitioned host."""
        if self._proc is not None:
            self._proc.pause()

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None:
            self._proc.resume()

    def restart(self, timeout: float = 60.0) -> None:
        """Stop gracefully and start again with the same ports and data."""
        self.stop()
        self.start(timeout)

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self._proc is not None and self._proc.alive()
