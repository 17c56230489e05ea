"""``kafka-lfs-relay lfs gc``: list (and with ``--delete``, delete) the objects no envelope will ever name again."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from kafka_lfs_relay.config import RelayConfig, load_config
from kafka_lfs_relay.exits import INTERNAL_ERROR, internal_error
from kafka_lfs_relay.lfsgc.census import MEANING, STATES, Census
from kafka_lfs_relay.lfsgc.metrics import publish, registry
from kafka_lfs_relay.lfsgc.scan import Deleted, Scan
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.units import format_duration, parse_duration
from targets.lfs import LfsTargetConfig

DEFAULT_GRACE: Final = "24h"


def add_parser(sub: Any) -> None:
    """Register ``lfs gc``."""
    lfs = sub.add_parser("lfs", help="work on the objects of an lfs relay's bucket")
    lsub = lfs.add_subparsers(dest="lfs_command", required=True)
    gc = lsub.add_parser(
        "gc",
        help="find the objects no committed envelope names (dry run unless --delete)",
        description="List the relay's objects that no envelope in Kafka names and none ever will: uploads of "
        "aborted transactions, and objects whose envelopes retention or compaction removed. Dry run by default.",
    )
    gc.add_argument("--config", type=Path, required=True, help="the lfs relay's YAML config file")
    gc.add_argument("--delete", action="store_true", help="delete them (default: only list and count)")
    gc.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        help=f"leave objects younger than this alone; must exceed target.transaction_timeout (default {DEFAULT_GRACE})",
    )
    gc.add_argument("--list", action="store_true", help="print every object that is (or would be) deleted, and why")
    gc.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    gc.add_argument("--metrics-file", type=Path, help="write the run's metrics here (node_exporter textfile format)")
    gc.add_argument("--pushgateway", help="push the run's metrics to this Prometheus Pushgateway (host:port or URL)")
    gc.set_defaults(func=cmd_gc)


def _grace(config: RelayConfig, text: str) -> float:
    grace = parse_duration(text, "--grace")
    kafka = config.target.kafka
    assert kafka is not None
    if grace <= kafka.transaction_timeout:
        raise ConfigError(
            "--grace",
            f"must be longer than target.transaction_timeout ({format_duration(kafka.transaction_timeout)}): an "
            "object younger than that may belong to a transaction that is still open",
            text,
        )
    return grace


def human(n: int) -> str:
    """A byte count for people: ``117.7 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _lines(scan: Scan, census: Census, grace: float, deleted: Deleted | None) -> list[str]:
    where = f"s3://{scan.bucket}/{scan.pattern.list_prefix}"
    out = [f"lfs gc of relay {scan.config.name!r}: {where} (grace {format_duration(grace)})"]
    for state in STATES:
        count, size = census.objects[state], census.bytes[state]
        out.append(f"  {state:<10} {count:>10,} objects {human(size):>12}  {MEANING[state]}")
    total, shown = len(census.deletable), human(census.deletable_bytes)
    if deleted is None:
        out.append(f"dry run: {total:,} objects ({shown}) would be deleted; run with --delete to delete them")
    else:
        out.append(f"deleted {deleted.objects:,} objects ({human(deleted.bytes)}) of {total:,} ({shown})")
        out += [f"could not delete {e}" for e in deleted.errors[:20]]
    return out


def _as_json(scan: Scan, census: Census, grace: float, deleted: Deleted | None) -> dict[str, Any]:
    return {
        "relay": scan.config.name,
        "bucket": scan.bucket,
        "prefix": scan.pattern.list_prefix,
        "grace_seconds": grace,
        "objects": {state: census.objects[state] for state in STATES},
        "bytes": {state: census.bytes[state] for state in STATES},
        "deletable": {"objects": len(census.deletable), "bytes": census.deletable_bytes},
        "deleted": None if deleted is None else {"objects": deleted.objects, "bytes": deleted.bytes},
        "errors": [] if deleted is None else deleted.errors,
    }


def cmd_gc(args: argparse.Namespace) -> int:
    """``lfs gc``: counts and bytes per state; exit 1 if a delete failed, 2 for a config mistake."""
    masker = SecretMasker()
    logs.configure(mask=masker)
    started = time.monotonic()
    config: RelayConfig | None = None
    census: Census | None = None
    deleted: Deleted | None = None
    code = 0
    try:
        config = load_config(args.config, masker=masker)
        logs.configure("debug" if config.log.level == "debug" else "error", config.log.format, mask=masker)
        if not isinstance(config.target.settings, LfsTargetConfig):
            raise ConfigError("target.type", "lfs gc works on the objects of an lfs target", config.target.type)
        grace = _grace(config, args.grace)
        scan = Scan(config, grace)
        known = scan.knowledge()
        census = scan.census(known)
        deleted = scan.delete(census) if args.delete else None
        code = 1 if deleted is not None and deleted.errors else 0
        if args.json:
            print(masker(json.dumps(_as_json(scan, census, grace, deleted), indent=2)))
        else:
            for line in _lines(scan, census, grace, deleted):
                print(masker(line))
            if args.list:
                for key, size, state in census.deletable:
                    print(masker(f"{state}\t{size}\ts3://{scan.bucket}/{key}"))
    except RelayError as exc:
        print(masker(f"kafka-lfs-relay: {exc}"), file=sys.stderr)
        code = exc.exit_code
    except Exception as exc:  # a bug; one line, like check
        print(masker(f"kafka-lfs-relay: {internal_error(exc)}"), file=sys.stderr)
        code = INTERNAL_ERROR
    if config is not None and (args.metrics_file is not None or args.pushgateway is not None):
        done = (deleted.objects, deleted.bytes) if deleted is not None else None
        errors = len(deleted.errors) if deleted is not None else 0
        reg = registry(
            census, done, errors if code in (0, 1) else max(errors, 1), time.monotonic() - started, code == 0
        )
        try:
            publish(reg, config.name, args.metrics_file, args.pushgateway)
        except OSError as exc:
            print(masker(f"kafka-lfs-relay: could not publish the run's metrics: {exc}"), file=sys.stderr)
            code = code or 1
    return code
