"""``kafka-lfs-relay check``: what the relay would see, cluster by cluster, topic by topic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from kafka_lfs_relay.admin import Admins, error_text
from kafka_lfs_relay.config import RelayConfig
from kafka_lfs_relay.permissions import check_describe_configs, list_acls
from kafka_lfs_relay.topicconfigs import TopicConfigComparer, source_configs_for
from lfs.s3 import S3Settings, describe, error_kind, make_client
from relay.settings import ClusterConfig, TopicConfig
from relay.sourcepool import ClusterProbe
from targets.hydrate import HydrateTargetConfig
from targets.hydrate.target import claim_report
from targets.kafka import topicconfig
from targets.kafka.settings import KafkaTargetConfig
from targets.kafka.topics import positions_topic_problem
from targets.lfs import LfsTargetConfig


def _partitions(cluster: ClusterConfig, topics: list[str] | None, timeout: float) -> tuple[dict[str, int], str | None]:
    """Partition counts of ``topics`` that exist (None: of every topic), and the reason the cluster cannot be
    read (if so)."""
    probe = ClusterProbe(cluster, timeout)
    try:
        md = probe.admin.list_topics(timeout=timeout)
    except Exception as exc:  # reachability is what is being checked; report librdkafka's reason
        probe.admin.poll(0.5)
        reason = probe.auth_error or (exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc))
        return {}, reason
    names = md.topics if topics is None else topics
    counts = {t: len(md.topics[t].partitions) for t in names if t in md.topics and md.topics[t].error is None}
    return counts, None


def _patterns(
    config: RelayConfig, cluster: ClusterConfig, listed: Mapping[str, int], out: Callable[[str], None]
) -> None:
    """One line per pattern entry: the topics it selects on ``cluster`` now, and where they go."""
    selection = config.rules
    for index, found in selection.matches(listed).items():
        rule = selection.rules[index]
        if not found:
            out(f"warn    source {cluster.name}: topics[{index}] {rule.describe()} selects no topic now")
            continue
        shown = ", ".join(f"{t} -> {rule.route(t, selection.source).target}" for t in found[:_SHOWN])
        more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        out(f"ok      source {cluster.name}: topics[{index}] {rule.describe()} selects {len(found)}: {shown}{more}")


_SHOWN = 20
"""Topics a pattern's line names before it only counts the rest."""


def _s3_buckets(config: RelayConfig) -> list[tuple[str, S3Settings, list[str]]]:
    """The target's S3 section paths, settings and the buckets each uses (re-homing reads its own)."""
    settings = config.target.settings
    if isinstance(settings, LfsTargetConfig):
        s3 = settings.lfs.s3
        found = [("target.lfs.s3", s3, [s3.bucket] if s3.bucket else [])]
        rehome = settings.lfs.rehome
        if rehome is not None:
            found.append(("target.lfs.rehome.s3", rehome.s3, sorted({rule.bucket for rule in rehome.policy.rules})))
        return found
    if isinstance(settings, HydrateTargetConfig):
        hydrate = settings.hydrate
        return [("target.hydrate.s3", hydrate.s3, sorted({rule.bucket for rule in hydrate.policy.rules}))]
    return []


def check_s3(config: RelayConfig, out: Callable[[str], None]) -> int:
    """For targets that use S3: reach every bucket; return the problems."""
    problems = 0
    for section, settings, buckets in _s3_buckets(config):
        where = settings.endpoint_url or "AWS S3"
        client = make_client(settings)
        for bucket in buckets:
            line = _probe_bucket(client, bucket, settings.prefix, section)
            out(f"{line[0]:<7} S3 bucket {bucket!r} at {where}: {line[1]}")
            problems += line[0] == "PROBLEM"
    return problems


def _probe_bucket(client: Any, bucket: str, prefix: str, section: str) -> tuple[str, str]:
    """(verdict, reason) for one bucket: a one-key listing, which changes nothing and, unlike
    HeadBucket, answers with an error code that tells wrong credentials from a missing permission."""
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:  # every S3 failure is a finding here, described without secrets
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        kind = error_kind(exc)
        if kind == "credentials":
            what = f"the credentials were rejected ({code})" if code else f"no usable credentials ({describe(exc)})"
            return (
                "PROBLEM",
                f"{what}; a permanent error, run would stop on it: check access_key_id and secret_access_key, "
                f"profile or role_arn in {section}, or the AWS environment (IRSA, instance role)",
            )
        if code == "NoSuchBucket":
            return "PROBLEM", "the bucket does not exist"
        if kind == "access_denied":
            # A least-privilege policy may allow PutObject/GetObject but not ListBucket.
            return (
                "warn",
                "the credentials were accepted but listing was denied; objects themselves may still be allowed",
            )
        if kind == "unavailable":
            return "PROBLEM", f"not reachable ({describe(exc)})"
        return "PROBLEM", describe(exc)
    return "ok", "reachable, the credentials were accepted"


def run_checks(config: RelayConfig, out: Callable[[str], None]) -> int:
    """Print one line per finding; return the number of problems."""
    timeout = max(5.0, config.source_pool.request_timeout)
    routes = {r.source: r for r in config.topics}
    reference: dict[str, int] = {}
    admins = Admins()
    problems = _check_sources(config, out, timeout, admins, routes, reference)
    kafka = config.target.kafka
    if kafka is None:
        out(f"skip    target type {config.target.type!r} is custom; only the sources were checked")
        return problems
    return problems + _check_target(config, kafka, out, timeout, admins, routes, reference)


def _check_sources(
    config: RelayConfig,
    out: Callable[[str], None],
    timeout: float,
    admins: Admins,
    routes: dict[str, TopicConfig],
    reference: dict[str, int],
) -> int:
    """Every source cluster and its topics; the problems found.

    Adds to ``routes`` the topics the sources' patterns select, and records in ``reference`` each
    source topic's partition count (from the first source that has it), which the target is checked against.
    """
    problems = 0
    for cluster in config.sources:
        counts, reason = _partitions(cluster, None, timeout)
        if reason is not None:
            out(f"PROBLEM source {cluster.name} ({cluster.bootstrap_servers}) is not reachable: {reason}")
            problems += 1
            continue
        out(f"ok      source {cluster.name} ({cluster.bootstrap_servers}) is reachable")
        if config.rules.dynamic:
            _patterns(config, cluster, counts, out)
            for topic, route in config.rules.routes(counts).items():
                routes.setdefault(topic, route)
        source_topics = list(routes)
        for topic in source_topics:
            if topic not in counts:
                out(f"PROBLEM source {cluster.name}: topic {topic!r} does not exist")
                problems += 1
                continue
            out(f"ok      source {cluster.name}: topic {topic!r} has {counts[topic]} partitions")
            if topic in reference and reference[topic] != counts[topic]:
                out(
                    f"PROBLEM source {cluster.name}: topic {topic!r} has {counts[topic]} partitions, "
                    f"another source has {reference[topic]}; failover needs identical topics"
                )
                problems += 1
            reference.setdefault(topic, counts[topic])
        present = [topic for topic in source_topics if topic in counts]
        problems += check_describe_configs(admins, cluster, "source", present, out, timeout)
        list_acls(admins, cluster, "source", out, timeout)
    return problems


def _check_target(
    config: RelayConfig,
    kafka: KafkaTargetConfig,
    out: Callable[[str], None],
    timeout: float,
    admins: Admins,
    routes: Mapping[str, TopicConfig],
    reference: Mapping[str, int],
) -> int:
    """The target cluster, its topics against the sources' ``reference`` counts, and what the target
    type needs besides (S3, the positions topic, topic configs); the problems found."""
    problems = check_s3(config, out)
    target = kafka.cluster
    counts, reason = _partitions(target, [t.target for t in routes.values()], timeout)
    if reason is not None:
        out(f"PROBLEM target {target.name} ({target.bootstrap_servers}) is not reachable: {reason}")
        return problems + 1
    out(f"ok      target {target.name} ({target.bootstrap_servers}) is reachable")
    existing = [route.target for route in routes.values() if route.target in counts]
    positions = kafka.positions_topic_for(config.name)
    problems += check_describe_configs(admins, target, "target", [*existing, positions], out, timeout)
    list_acls(admins, target, "target", out, timeout)
    for route in routes.values():
        problems += _check_target_topic(route, counts.get(route.target), reference.get(route.source), kafka, out)
    problems += check_positions_topic(config, out, timeout)
    if isinstance(config.target.settings, HydrateTargetConfig):
        targets = [route.target for route in routes.values()]
        for line in claim_report(config.target.settings, config.max_in_flight, targets, timeout):
            out(line)
    return problems + check_topic_configs(config, out)


def _check_target_topic(
    route: TopicConfig, have: int | None, need: int | None, kafka: KafkaTargetConfig, out: Callable[[str], None]
) -> int:
    """One route's target topic: ``have`` partitions (None: missing) for a source topic of ``need``; 1 if a problem."""
    if have is None:
        if kafka.create_topics:
            out(
                f"ok      target topic {route.target!r} does not exist yet; it will be created "
                f"with {need if need is not None else 'the source'} partitions"
            )
            return 0
        out(f"PROBLEM target topic {route.target!r} does not exist and target.create_topics is false")
        return 1
    if route.partition == "preserve" and need is not None and have < need and kafka.create_topics:
        out(
            f"ok      target topic {route.target!r} has {have} partitions, source topic {route.source!r} has "
            f"{need}; the relay adds partitions up to {need} before relaying them (partition: preserve)"
        )
    elif route.partition == "preserve" and need is not None and have < need:
        out(
            f"PROBLEM target topic {route.target!r} has {have} partitions but source topic {route.source!r} "
            f"has {need}; partition: preserve needs at least as many, and target.create_topics is false"
        )
        return 1
    elif isinstance(route.partition, int) and route.partition >= have:
        out(f"PROBLEM target topic {route.target!r} has no partition {route.partition}")
        return 1
    else:
        out(f"ok      target topic {route.target!r} has {have} partitions (partition: {route.partition})")
    return 0


def check_positions_topic(config: RelayConfig, out: Callable[[str], None], timeout: float) -> int:
    """The relay's positions topic: created by the relay if missing, else exactly compacted with one partition."""
    kafka = config.target.kafka
    assert kafka is not None
    topic = kafka.positions_topic_for(config.name)
    admin = Admins()(kafka.cluster)
    try:
        md = admin.list_topics(topic, timeout=timeout)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            out(f"ok      positions topic {topic!r} does not exist yet; the relay creates it (compact, 1 partition)")
            return 0
        resource = ConfigResource(ResourceType.TOPIC, topic)
        entry = admin.describe_configs([resource])[resource].result(timeout=timeout + 5).get("cleanup.policy")
    except Exception as exc:  # a finding like any other: the check goes on
        out(f"warn    positions topic {topic!r} was not checked: {error_text(exc)}")
        return 0
    problem = positions_topic_problem(None if entry is None else str(entry.value), len(tmd.partitions))
    if problem is not None:
        out(f"PROBLEM positions topic {topic!r} {problem}; the relay refuses to start")
        return 1
    out(f"ok      positions topic {topic!r} is compacted and has one partition")
    return 0


def check_topic_configs(config: RelayConfig, out: Callable[[str], None]) -> int:
    """Where an existing target topic's configs differ from its source topic's (on the keys copied); problems.

    A different ``cleanup.policy`` is a problem (a compacted source mirrored into a deleting topic
    loses keys; the reverse keeps records the source deleted), and so are timestamp limits narrower
    than the source's (the target refuses a record the source took, and the relay stops on it);
    other differences are warnings: a disaster-recovery site may keep data longer or shorter on purpose.
    """
    kafka = config.target.kafka
    source = source_configs_for(config)
    if kafka is None or source is None:
        return 0
    try:
        found, planned = TopicConfigComparer(config, kafka, source).differences()
    except Exception as exc:  # a finding like any other: the check goes on
        out(f"warn    topic configs were not compared: {error_text(exc)}")
        return 0
    for topic, configs in planned.items():
        if configs and kafka.create_topics:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(configs.items()))
            out(f"ok      target topic {topic!r} will be created with its source's configs: {shown}")
    problems = 0
    for diff in found:
        refuses = diff.key in topicconfig.TIMESTAMP_LIMITS
        verdict = "PROBLEM" if diff.key == "cleanup.policy" or refuses else "warn   "
        problems += verdict == "PROBLEM"
        out(
            f"{verdict} target topic {diff.target_topic!r} has {diff.key}={diff.actual}; from source topic "
            f"{diff.source_topic!r} it should be {'at least ' if refuses else ''}{diff.wanted}"
            + (": it would refuse records the source accepts, and the relay stops at the first" if refuses else "")
            + (" (target.topic_configs.sync_interval sets it)" if kafka.topic_configs.sync_interval > 0 else "")
        )
    compared = {r.target for r in config.topics} - set(planned)
    if compared and not found:
        out(f"ok      target topic configs match their sources on {', '.join(kafka.topic_configs.keys)}")
    return problems


__all__ = ["check_positions_topic", "check_s3", "check_topic_configs", "run_checks"]
