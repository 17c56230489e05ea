"""A set of sandbox servers brought up and down together, with their state kept in one folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kafka_lfs_relay.sandbox.distribution import kafka_distribution
from kafka_lfs_relay.sandbox.kafka import ClusterSpec, KafkaCluster
from kafka_lfs_relay.sandbox.process import SandboxError
from kafka_lfs_relay.sandbox.s3 import S3Server

STATE_FILE = "sandbox.json"


class Sandbox:
    """N plain KRaft clusters, optionally one SASL_SSL cluster and one S3 server, under ``root``.

    ``up`` is all-or-nothing: if any server fails to start, the ones already started are stopped
    before the error propagates, so a failed start leaves no process behind.
    """

    def __init__(self, root: Path, clusters: int = 1, s3: bool = False, auth: bool = False) -> None:
        self.root = root
        self.n_clusters = clusters
        self.want_s3 = s3
        self.want_auth = auth
        self.clusters: list[KafkaCluster] = []
        self.s3: S3Server | None = None

    def up(self) -> None:
        """Start every server and record them in ``root/sandbox.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.root / STATE_FILE).exists():
            raise SandboxError(
                f"{self.root} already holds a running sandbox; "
                f"run `kafka-lfs-relay sandbox down --dir {self.root}` first"
            )
        try:
            dist = kafka_distribution()
            names = [f"cluster-{i + 1}" for i in range(self.n_clusters)]
            if self.want_auth:
                names.append("secure")
            for name in names:
                cluster = KafkaCluster.create(name, self.root / name, dist, auth=name == "secure")
                self.clusters.append(cluster)
                cluster.start()
                self.save()
            if self.want_s3:
                self.s3 = S3Server(self.root / "s3")
                self.s3.start()
            self.save()
        except BaseException:
            self.down()
            raise

    def save(self) -> None:
        """Write the state file that ``sandbox down`` reads."""
        state = {
            "clusters": [c.spec.to_state() for c in self.clusters],
            "s3": None if self.s3 is None else self.s3.state(),
            "owner_pid": os.getpid(),
        }
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.root / STATE_FILE)

    @classmethod
    def load(cls, root: Path) -> Sandbox:
        """The sandbox recorded in ``root`` by an earlier ``up``."""
        path = root / STATE_FILE
        if not path.exists():
            raise SandboxError(f"no sandbox is recorded in {root} (no {STATE_FILE})")
        state = json.loads(path.read_text(encoding="utf-8"))
        box = cls(root)
        box.clusters = [KafkaCluster(ClusterSpec.from_state(c), None) for c in state["clusters"]]
        box.s3 = None if state.get("s3") is None else S3Server.from_state(state["s3"])
        return box

    def down(self) -> None:
        """Stop every server (S3 first, then clusters in reverse order) and forget the state."""
        errors: list[str] = []
        if self.s3 is not None:
            try:
                self.s3.stop()
            except SandboxError as exc:
                errors.append(str(exc))
        for cluster in reversed(self.clusters):
            try:
                cluster.stop()
            except SandboxError as exc:
                errors.append(str(exc))
        (self.root / STATE_FILE).unlink(missing_ok=True)
        if errors:
            raise SandboxError("; ".join(errors))

    def info(self) -> dict[str, Any]:
        """Endpoints in the shape ``sandbox up --json`` prints."""
        return {
            "clusters": [c.info() for c in self.clusters],
            "s3": None if self.s3 is None else self.s3.info(),
            "dir": str(self.root),
        }
