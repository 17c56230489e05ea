"""``kafka-lfs-relay sandbox up|down``: real Kafka clusters and S3 on loopback for tests and demos."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from kafka_lfs_relay.sandbox.process import SandboxError
from kafka_lfs_relay.sandbox.sandbox import Sandbox
from relay import logs


def add_parser(sub: Any) -> None:
    """Register the ``sandbox`` command and its ``up``/``down`` subcommands."""
    sandbox = sub.add_parser("sandbox", help="run real Kafka clusters and an S3 server on loopback")
    actions = sandbox.add_subparsers(dest="sandbox_cmd", required=True)
    up = actions.add_parser("up", help="start clusters (and S3) and print their endpoints")
    up.add_argument("--clusters", type=int, default=1, help="plain PLAINTEXT clusters to start (default 1)")
    up.add_argument("--s3", action="store_true", help="also start SeaweedFS with its S3 gateway")
    up.add_argument("--auth", action="store_true", help="also start a SASL_SSL (SCRAM-SHA-512, TLS) cluster")
    up.add_argument("--dir", type=Path, help="folder for data, logs and state (default: a new temp folder)")
    up.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    up.add_argument("--detach", action="store_true", help="return once ready and leave the servers running")
    up.set_defaults(func=cmd_up)
    down = actions.add_parser("down", help="stop a detached sandbox")
    down.add_argument("--dir", type=Path, required=True, help="the folder given to `sandbox up`")
    down.set_defaults(func=cmd_down)
    fetch = actions.add_parser("fetch", help="download the Kafka jars into the cache (or check KAFKA_HOME)")
    fetch.set_defaults(func=cmd_fetch)


def _table(info: dict[str, Any]) -> str:
    rows = [("name", "bootstrap servers", "client properties")]
    for c in info["clusters"]:
        props = ", ".join(f"{k}={'***' if 'password' in k else v}" for k, v in c["kafka"].items()) or "-"
        rows.append((c["name"], c["bootstrap_servers"], props))
    width0 = max(len(r[0]) for r in rows)
    width1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{width0}}  {b:<{width1}}  {c}" for a, b, c in rows]
    s3 = info.get("s3")
    if s3:
        lines.append(
            f"s3: {s3['endpoint_url']}  bucket={s3['bucket']}  region={s3['region']}  "
            f"access_key_id={s3['access_key_id']}  (secret in --json output)"
        )
    lines.append(f"state and logs: {info['dir']}")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the sandbox; stay in the foreground until Ctrl-C unless ``--detach``."""
    if args.clusters < 0 or (args.clusters == 0 and not args.auth and not args.s3):
        print("sandbox up: --clusters must be 1 or more (or ask for --auth/--s3)", file=sys.stderr)
        return 2
    # Log lines (librdkafka's included) go to stderr, warnings and above: stdout is the table or JSON.
    logs.configure("warning")
    root = args.dir or Path(tempfile.mkdtemp(prefix="kfr-sandbox-"))
    box = Sandbox(root.resolve(), clusters=args.clusters, s3=args.s3, auth=args.auth)
    stop = threading.Event()
    # SIGTERM is turned into the same orderly path as Ctrl-C so that a supervisor stopping
    # `sandbox up` never leaves orphaned brokers behind.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        box.up()
    except KeyboardInterrupt:
        print("sandbox up: interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except SandboxError as exc:
        print(f"sandbox up: {exc}", file=sys.stderr)
        return 1
    info = box.info()
    print(json.dumps(info, indent=2) if args.json else _table(info), flush=True)
    if args.detach:
        return 0
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    box.down()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the sandbox recorded in ``--dir``."""
    try:
        Sandbox.load(args.dir.resolve()).down()
    except SandboxError as exc:
        print(f"sandbox down: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Resolve the broker jars so the first test run does not pay for the download."""
    from kafka_lfs_relay.sandbox.distribution import kafka_distribution

    try:
        dist = kafka_distribution()
    except SandboxError as exc:
        print(f"sandbox fetch: {exc}", file=sys.stderr)
        return 1
    print(f"Kafka {dist.version}: {len(dist.libs)} jars in {dist.source}")
    return 0
