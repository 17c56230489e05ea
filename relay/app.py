"""Wiring: the one place where a validated config becomes a running relay."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from relay.config.env import load_yaml, substitute_env
from relay.config.model import RelayConfig, TargetConfig, parse_config
from relay.errors import ConfigError
from relay.metrics import RelayMetrics
from relay.relay import FilterFn, Progress, Relay
from relay.sourcepool import SourcePool
from relay.target import PartitionOwner, Target

# Extra sections under ``target`` that a built-in target type validates itself.
TARGET_OPTION_KEYS = ("lfs", "hydrate", "options")


def load_config(path: Path, env: Mapping[str, str] | None = None) -> RelayConfig:
    """Read, substitute ``${VAR}`` and validate a YAML config file."""
    tree = substitute_env(load_yaml(path), os.environ if env is None else env)
    return parse_config(tree, TARGET_OPTION_KEYS)


def load_object(dotted: str, what: str, key: str) -> Any:
    """Import ``package.module:Name``; a failure is a ConfigError naming ``key``."""
    module_name, sep, attr = dotted.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(key, f"expected a {what} name or package.module:Class", dotted)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import module {module_name!r} ({exc.msg})", dotted) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(key, f"module {module_name!r} has no {attr!r}", dotted) from None


def build_target(config: RelayConfig, metrics: RelayMetrics) -> Target:
    """The configured target: a built-in type, or a class loaded by dotted path."""
    tc: TargetConfig = config.target
    if tc.type == "kafka":
        from targets.kafka import KafkaTarget, Route

        routes = [Route(t.source, t.target, t.partition) for t in config.topics]
        return KafkaTarget(
            cluster=tc.cluster,
            routes=routes,
            batch=tc.batch,
            retry=tc.retry,
            transactional_id=tc.transactional_id or config.name,
            transaction_timeout=tc.transaction_timeout,
            create_topics=tc.create_topics,
            metrics=metrics,
            fence_per_partition=config.group is not None,
        )
    if tc.type == "lfs":
        from targets.lfs import build_lfs_target

        return build_lfs_target(config, metrics)
    if tc.type == "hydrate":
        from targets.hydrate import build_hydrate_target

        return build_hydrate_target(config, metrics)
    cls = load_object(tc.type, "target type (kafka)", "target.type")
    options = tc.options.get("options", {})
    target = cls(dict(options) if isinstance(options, Mapping) else {})
    if not isinstance(target, Target):
        raise ConfigError("target.type", "does not implement the Target protocol (relay.target.Target)", tc.type)
    return target


def build_relay(
    config: RelayConfig,
    metrics: RelayMetrics,
    filters: FilterFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Relay:
    """A relay for ``config``; nothing is connected until :meth:`Relay.run`."""
    sources = config.sources if config.mode == "failover" else config.sources[:1]
    pool = SourcePool(sources, [t.source for t in config.topics], config.source_pool, metrics)
    target = build_target(config, metrics)
    if config.group is not None and not isinstance(target, PartitionOwner):
        raise ConfigError("group", f"target type {config.target.type!r} cannot take part in group mode")
    return Relay(
        pool=pool,
        target=target,
        topics=config.topics,
        metrics=metrics,
        max_in_flight=config.max_in_flight,
        stop_at_end=config.stop_at_end,
        filters=filters,
        on_progress=on_progress,
        group=config.group,
    )
