"""``kafka-lfs-relay run`` and ``check``: config in, one clear line out on any user mistake."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import structlog

from kafka_lfs_relay import workers
from kafka_lfs_relay.background import lead_partition
from kafka_lfs_relay.config import RelayConfig, load_config, validate
from kafka_lfs_relay.config.model import parse_workers, with_workers
from kafka_lfs_relay.exits import INTERNAL_ERROR, internal_error
from kafka_lfs_relay.stopsignals import on_stop_signals
from kafka_lfs_relay.wiring import build_background, build_relay
from relay import logs
from relay.errors import ConfigError, RelayError, SecretMasker
from relay.health import RelayHealth
from relay.metrics import RelayMetrics
from relay.relay import Progress, Relay


def add_parsers(sub: Any) -> None:
    """Register ``run`` and ``check``."""
    run = sub.add_parser("run", help="relay records as the config says")
    run.add_argument("--config", type=Path, required=True, help="YAML config file")
    run.add_argument("--mode", choices=("single", "failover"), help="override the config's mode")
    run.add_argument("--stop-at-end", action="store_true", help="stop once the end offsets seen at start are reached")
    run.add_argument(
        "--workers",
        metavar="N",
        help="run N relay processes that share the partitions in group mode (auto: one per core); "
        "overrides the config's workers",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the parent for its workers
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config and report what the relay would see")
    check.add_argument("--config", type=Path, required=True, help="YAML config file")
    check.set_defaults(func=cmd_check)


def _say(masker: SecretMasker, text: str) -> None:
    """One line to stderr, known secrets scrubbed."""
    print(masker(f"kafka-lfs-relay: {text}"), file=sys.stderr)


def _load(args: argparse.Namespace, masker: SecretMasker) -> RelayConfig:
    config = load_config(args.config, masker=masker)
    changes: dict[str, Any] = {}
    if getattr(args, "mode", None):
        changes["mode"] = args.mode
        if args.mode == "single" and len(config.sources) > 1:
            changes["sources"] = config.sources[:1]
    if getattr(args, "stop_at_end", False):
        changes["stop_at_end"] = True
    if getattr(args, "workers", None) is not None:
        config = with_workers(config, parse_workers(args.workers, "--workers"))
        if not changes:
            validate(config)
    if not changes:
        return config
    config = dataclasses.replace(config, **changes)
    validate(config)
    return config


def _worker_count(config: RelayConfig) -> int:
    if config.workers is None:
        return 1
    return workers.cores() if config.workers == "auto" else config.workers


def _run_workers(args: argparse.Namespace, config: RelayConfig, count: int, masker: SecretMasker) -> int:
    """The parent of ``count`` workers (see :mod:`kafka_lfs_relay.workers`)."""
    logs.configure(config.log.level, config.log.format, mask=masker)
    assert config.group is not None
    structlog.get_logger("kafka_lfs_relay").info(
        "starting workers in group mode", workers=count, group=config.group.id, relay=config.name
    )
    argv = ["run", "--config", str(args.config), "--workers", str(count)]
    if args.mode:
        argv += ["--mode", args.mode]
    return workers.supervise(workers.worker_argv(argv), count)


class _ProgressBar:
    """A one-line progress bar of records remaining, redrawn in place on a terminal."""

    def __init__(self) -> None:
        self.first: int | None = None

    def __call__(self, progress: Progress) -> None:
        if self.first is None or progress.remaining > self.first:
            self.first = max(progress.remaining, 1)
        done = 1 - progress.remaining / self.first
        bar = "#" * int(done * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {progress.remaining:>12,} records left in {progress.partitions_left} partitions "
        )
        if progress.partitions_left == 0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_run(args: argparse.Namespace) -> int:
    """Run the relay until stopped (SIGTERM/SIGINT drain and exit 0) or until the end with --stop-at-end.

    A user mistake ends it with one line and the error's exit code; a bug with one line naming the
    exception (exit 70) and its traceback in the log. Every line printed or logged is scrubbed of
    the config's secrets, and no traceback shows local variables.
    """
    # A stop signal before the relay runs (a rolling restart that comes while it starts) is kept
    # and honoured once it does: the relay then drains at once and exits 0, as documented, instead
    # of dying of the signal half-way through its start.
    early = threading.Event()
    with on_stop_signals(lambda _signum, _frame: early.set()):
        return _run_command(args, early)


def _run_command(args: argparse.Namespace, early: threading.Event) -> int:
    masker = SecretMasker()
    logs.configure(mask=masker)  # until the config says otherwise: a bug while loading is logged too
    log = structlog.get_logger("kafka_lfs_relay")
    try:
        config = _load(args, masker)
    except ConfigError as exc:
        _say(masker, str(exc))
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback in the log for the report
        log.exception("config could not be loaded: internal error")
        _say(masker, internal_error(exc))
        return INTERNAL_ERROR
    if early.is_set():
        log.info("a stop signal came while the config was read; nothing was started")
        return 0
    index = getattr(args, "worker_index", None)
    if index is None:
        count = _worker_count(config)
        if count > 1:
            return _run_workers(args, config, count, masker)
    logs.configure(config.log.level, config.log.format, mask=masker, worker=index)
    log = structlog.get_logger("kafka_lfs_relay")
    if index is not None and config.metrics_listen is not None and config.metrics_listen[1] != 0:
        # Worker i serves metrics on the configured port + i.
        host, port = config.metrics_listen
        config = dataclasses.replace(config, metrics_listen=(host, port + index))
    metrics = RelayMetrics(health=RelayHealth(config.stall_timeout))
    try:
        bar = _ProgressBar() if config.stop_at_end and sys.stderr.isatty() else None
        relay = build_relay(config, metrics, on_progress=bar)
        if config.metrics_listen is not None:
            _serve_metrics(metrics, *config.metrics_listen)
        _run_until_stopped(config, relay, metrics, early)
    except RelayError as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        # A stop asked for while start-up waited is clean (exit 0), not an error.
        (log.info if exc.exit_code == 0 else log.error)("relay stopped", error=str(exc), code=exc.code)
        _say(masker, str(exc))
        return exc.exit_code
    except Exception as exc:  # a bug, not a user mistake: keep the traceback in the log for the report
        log.exception("relay stopped by an internal error")
        _say(masker, internal_error(exc))
        return INTERNAL_ERROR
    records, bytes_ = metrics.relayed()
    log.info("relay stopped cleanly", records=records, bytes=bytes_)
    return 0


def _serve_metrics(metrics: RelayMetrics, host: str, port: int) -> None:
    """Start the metrics and health listener; a port that cannot be bound is the config's mistake."""
    log = structlog.get_logger("kafka_lfs_relay")
    try:
        metrics.serve(host, port)
    except OSError as exc:
        raise ConfigError("metrics.listen", f"cannot listen there ({exc.strerror})", f"{host}:{port}") from None
    log.info(
        "metrics and health endpoints",
        metrics=f"http://{host}:{port}/metrics",
        liveness=f"http://{host}:{port}/healthz",
        readiness=f"http://{host}:{port}/readyz",
    )


def _run_until_stopped(config: RelayConfig, relay: Relay, metrics: RelayMetrics, early: threading.Event) -> None:
    """Run ``relay`` and its background work until it ends or a stop signal (``early``: one that came
    while it was being built) has it drain."""
    log = structlog.get_logger("kafka_lfs_relay")

    def on_signal(signum: int, _frame: object) -> None:
        # Only sets a flag: the relay's own thread drains and returns, so nothing is half-written.
        log.info("signal received; draining", signal=signal.Signals(signum).name)
        relay.stop()

    # Every relayed record allocates a few short-lived objects; with the default threshold
    # the cyclic collector runs every ~700 allocations, a cost in throughput for nothing:
    # nothing in the hot path builds reference cycles. Start-up objects are frozen out of
    # collection, and young collections are made rarer.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    # One instance does the periodic work (group offsets, topic configs): the owner of the lead
    # partition (kafka_lfs_relay.background), whether workers or replicas run the relay.
    explicit = [t.source for t in config.topics]

    def leads() -> bool:
        lead = lead_partition(explicit, relay.topics())
        return lead is not None and lead in relay.owned()

    background = build_background(config, metrics, leads=leads)
    background.start()
    try:
        with on_stop_signals(on_signal):
            if early.is_set():
                log.info("a stop signal came while the relay was built; draining")
                relay.stop()
            relay.run()
    finally:
        background.stop()


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, then report reachability and partitions of every cluster and topic.

    Prints findings to stdout and never a traceback: a bug is one line naming the exception
    (exit 70), scrubbed of the config's secrets like every other line.
    """
    from kafka_lfs_relay.checks import run_checks

    masker = SecretMasker()
    logs.configure(mask=masker)
    try:
        config = _load(args, masker)
        # check reports every unreachable cluster in its own line, with librdkafka's reason; the
        # clients' own lines about it (a warning per client) would only repeat that, so they show
        # with log.level: debug alone.
        level = "debug" if config.log.level == "debug" else "error"
        logs.configure(level, config.log.format, mask=masker)
        problems = run_checks(config, lambda line: print(masker(line)))
    except RelayError as exc:
        _say(masker, str(exc))
        return exc.exit_code
    except Exception as exc:  # a bug; check reports it in one line, without a traceback
        _say(masker, internal_error(exc))
        return INTERNAL_ERROR
    if problems:
        print(f"{problems} problem(s) found", file=sys.stderr)
        return 1
    print("config OK")
    return 0
