"""Unit tests of the hydrate target's configuration: target.hydrate parsing, defaults, errors and wiring."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import RelayConfig, parse_config
from kafka_lfs_relay.wiring import build_target
from lfs import BucketRule
from relay.errors import ConfigError
from relay.metrics import RelayMetrics
from relay.settings import MIB, ClusterConfig
from relay.target import RunTarget
from targets.hydrate import Hydrate, HydrateConfig
from targets.hydrate.limits import FRAMING
from targets.hydrate.target import _with_message_limit, kafka_config


def tree(hydrate: dict[str, Any] | None = None, **target: Any) -> dict[str, Any]:
    """A whole relay config tree with a hydrate target (``hydrate=None`` leaves target.hydrate out)."""
    t: dict[str, Any] = {"type": "hydrate", "bootstrap_servers": "dst:9092", **target}
    if hydrate is not None:
        t["hydrate"] = hydrate
    return {
        "name": "edge",
        "sources": [{"name": "primary", "bootstrap_servers": "src:9092"}],
        "topics": [{"source": "envelopes", "target": "plain"}, {"source": "images"}],
        "target": t,
    }


def relay_config(hydrate: dict[str, Any] | None = None, **target: Any) -> RelayConfig:
    return parse_config(tree(hydrate, **target))


def parsed(**hydrate: Any) -> HydrateConfig:
    """parse_hydrate of ``hydrate``, with allowed_buckets: [payloads] unless given."""
    hydrate.setdefault("allowed_buckets", ["payloads"])
    settings: HydrateConfig = relay_config(hydrate).target.settings.hydrate
    return settings


def error(**hydrate: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parsed(**hydrate)
    return info.value


def test_defaults() -> None:
    """Only allowed_buckets given: no cap but what can be produced, verified payloads only, 4 fetches of 8 MiB
    parts, fail on errors."""
    cfg = parsed()
    assert cfg.policy.rules == (BucketRule("payloads"),)
    assert (cfg.max_object_size, cfg.allow_unverified) == (None, False)
    assert (cfg.fetch_concurrency, cfg.part_size) == (4, 8 * MIB)
    assert (cfg.on_error, cfg.dead_letter_topic) == ("fail", None)
    assert cfg.s3.bucket is None


def test_every_setting_is_read() -> None:
    """Every key of target.hydrate lands in the HydrateConfig."""
    cfg = parsed(
        allowed_buckets=["a", {"bucket": "b", "prefixes": ["tenant/", "shared/"]}],
        max_object_size="64MiB",
        allow_unverified=True,
        fetch_concurrency=16,
        part_size="1MiB",
        on_error="dead-letter",
        dead_letter_topic="envelopes-dlq",
        s3={"endpoint_url": "http://s3:9000", "region": "eu-west-1", "path_style": True},
    )
    assert cfg.policy.rules == (BucketRule("a"), BucketRule("b", ("tenant/", "shared/")))
    assert (cfg.max_object_size, cfg.allow_unverified, cfg.fetch_concurrency, cfg.part_size) == (
        64 * MIB,
        True,
        16,
        MIB,
    )
    assert (cfg.on_error, cfg.dead_letter_topic) == ("dead-letter", "envelopes-dlq")
    assert (cfg.s3.endpoint_url, cfg.s3.region, cfg.s3.path_style) == ("http://s3:9000", "eu-west-1", True)


def test_max_object_size_defaults_to_the_s3_sections() -> None:
    """Without hydrate.max_object_size, s3.max_object_size (the key the lfs target uses too) is the cap."""
    assert parsed(s3={"max_object_size": "100MiB"}).max_object_size == 100 * MIB


@pytest.mark.parametrize(
    ("hydrate", "path", "message"),
    [
        ({"allowed_buckets": None}, "target.hydrate.allowed_buckets", "is required"),
        ({"allowed_buckets": []}, "target.hydrate.allowed_buckets", "at least one bucket"),
        ({"allowed_buckets": "payloads"}, "target.hydrate.allowed_buckets", "expected a list"),
        ({"allowed_buckets": [" "]}, "target.hydrate.allowed_buckets[0]", "must not be empty"),
        ({"allowed_buckets": ["a", 3]}, "target.hydrate.allowed_buckets[1]", "expected a bucket name"),
        ({"allowed_buckets": [{"prefixes": ["x/"]}]}, "target.hydrate.allowed_buckets[0].bucket", "is required"),
        (
            {"allowed_buckets": [{"bucket": "a", "prefix": ["x/"]}]},
            "target.hydrate.allowed_buckets[0].prefix",
            "did you mean 'prefixes'",
        ),
        (
            {"allowed_buckets": [{"bucket": "a", "prefixes": []}]},
            "target.hydrate.allowed_buckets[0].prefixes",
            "non-empty list",
        ),
        (
            {"allowed_buckets": [{"bucket": "a", "prefixes": ["x/", ""]}]},
            "target.hydrate.allowed_buckets[0].prefixes[1]",
            "non-empty string",
        ),
        ({"allowed_buckets": ["a", {"bucket": "a"}]}, "target.hydrate.allowed_buckets[1]", "listed twice"),
        ({"s3": {"bucket": "payloads"}}, "target.hydrate.s3.bucket", "allowed_buckets"),
        ({"s3": {"sse": "AES256"}}, "target.hydrate.s3.sse", "writing"),
        ({"s3": {"endpoint": "x"}}, "target.hydrate.s3.endpoint", "did you mean 'endpoint_url'"),
        ({"on_error": "skip"}, "target.hydrate.on_error", "fail, dead-letter, passthrough"),
        ({"on_error": "dead-letter"}, "target.hydrate.dead_letter_topic", "is required"),
        ({"dead_letter_topic": "dlq"}, "target.hydrate.dead_letter_topic", "only applies"),
        ({"on_error": "dead-letter", "dead_letter_topic": "a b"}, "target.hydrate.dead_letter_topic", "legal"),
        ({"on_error": "dead-letter", "dead_letter_topic": "plain"}, "target.hydrate.dead_letter_topic", "of its own"),
        ({"on_error": "dead-letter", "dead_letter_topic": "images"}, "target.hydrate.dead_letter_topic", "of its own"),
        ({"fetch_concurrency": 0}, "target.hydrate.fetch_concurrency", "at least 1"),
        ({"fetch_concurrency": 1000}, "target.hydrate.fetch_concurrency", "at most 256"),
        ({"part_size": "1KiB"}, "target.hydrate.part_size", "at least 64KiB"),
        ({"max_object_size": 0}, "target.hydrate.max_object_size", "greater than zero"),
        ({"allow_unverified": "yes"}, "target.hydrate.allow_unverified", "true or false"),
        ({"allowed_bucket": ["a"]}, "target.hydrate.allowed_bucket", "did you mean 'allowed_buckets'"),
    ],
)
def test_mistakes_are_config_errors_naming_the_key(hydrate: dict[str, Any], path: str, message: str) -> None:
    """Each mistake in target.hydrate is one ConfigError naming its key path."""
    hydrate.setdefault("allowed_buckets", ["payloads"])
    if hydrate["allowed_buckets"] is None:
        del hydrate["allowed_buckets"]
    with pytest.raises(ConfigError) as info:
        relay_config(hydrate)
    assert info.value.path == path
    assert message in str(info.value)


def test_secret_key_never_appears_in_an_error() -> None:
    """A credentials mistake names the key but never shows the secret."""
    err = error(s3={"access_key_id": "AKIA", "secret_access_key": "hunter2-very-secret", "session_token": []})
    assert "hunter2" not in str(err)


def test_missing_hydrate_section_is_an_error() -> None:
    """type: hydrate without target.hydrate is a ConfigError (nothing may be fetched without an allow-list)."""
    with pytest.raises(ConfigError) as info:
        relay_config()
    assert info.value.path == "target.hydrate"


def test_sections_of_other_targets_are_refused() -> None:
    """A target.lfs section next to type: hydrate is a ConfigError, not silently ignored."""
    with pytest.raises(ConfigError) as info:
        relay_config({"allowed_buckets": ["a"]}, lfs={"s3": {"bucket": "b"}})
    assert info.value.path == "target.lfs"


def test_build_target_wires_a_hydrate_target() -> None:
    """type: hydrate builds the Kafka target with hydration as its transform (nothing is connected yet)."""
    target = build_target(relay_config({"allowed_buckets": ["a"]}), RelayMetrics())
    try:
        assert isinstance(target, RunTarget) and isinstance(target.transform, Hydrate)
        assert (target.transform.window.limit, target.transform.window.copies) == (256 * MIB, 3)
    finally:
        target.close()


def test_without_max_object_size_the_producer_takes_what_librdkafka_allows_and_topics_bound_claims() -> None:
    """With no max_object_size the producer accepts up to librdkafka's ceiling; what can be produced bounds claims."""
    config = relay_config({"allowed_buckets": ["a"]})
    assert kafka_config(config.target.settings, config.max_in_flight).cluster.kafka["message.max.bytes"] == str(
        1_000_000_000
    )
    target = build_target(config, RelayMetrics())
    hydrate = target.transform
    assert isinstance(hydrate, Hydrate)
    try:
        assert hydrate.limits.max_object_size is None and hydrate.limits.producer_max == 1_000_000_000
        assert hydrate.limits.smallest("plain").limit == 256 * MIB // 3  # the window, until a topic limit is read
        hydrate.limits.set_topic_limits({"plain": 1_048_588})
        assert hydrate.limits.smallest("plain").limit == 1_048_588 - FRAMING
        assert hydrate.resolver.max_object_size == 256 * MIB // 3
    finally:
        target.close()


def test_producer_accepts_records_up_to_max_object_size() -> None:
    """The producer's message.max.bytes rises to fit max_object_size (capped), unless target.kafka sets it."""
    plain = ClusterConfig("t", "dst:9092")
    assert _with_message_limit(plain, 65 * MIB).kafka == {"message.max.bytes": str(65 * MIB)}
    assert _with_message_limit(plain, 5 * 1024**3).kafka == {"message.max.bytes": "1000000000"}
    assert _with_message_limit(plain, 1000).kafka == {}
    own = ClusterConfig("t", "dst:9092", {"message.max.bytes": "2000000"})
    assert _with_message_limit(own, 65 * MIB) is own


def test_payloads_count_twice_when_the_producer_does_not_compress() -> None:
    """With compression.type none the window counts a produced payload twice (ours and librdkafka's), else thrice."""
    config = relay_config({"allowed_buckets": ["a"]}, kafka={"compression.type": "none"})
    target = build_target(config, RelayMetrics())
    assert isinstance(target.transform, Hydrate)
    try:
        assert target.transform.window.copies == 2
    finally:
        target.close()


@pytest.mark.parametrize(
    ("max_in_flight", "batch", "compression", "expected"),
    [
        ("256MiB", None, None, 256 * MIB // 6),
        ("1GiB", None, None, 64 * MIB),
        ("256MiB", "16MiB", None, 16 * MIB),
        ("256MiB", None, "none", 64 * MIB),
    ],
)
def test_a_batch_holds_at_most_half_the_payload_window(
    max_in_flight: str, batch: str | None, compression: str | None, expected: int
) -> None:
    """The Kafka target under a hydrate target cuts batches at half of what the window holds, or batch.max_bytes."""
    raw = tree({"allowed_buckets": ["a"]})
    raw["max_in_flight"] = max_in_flight
    if batch is not None:
        raw["target"]["batch"] = {"max_bytes": batch}
    if compression is not None:
        raw["target"]["kafka"] = {"compression.type": compression}
    config = parse_config(raw)
    assert kafka_config(config.target.settings, config.max_in_flight).batch.max_bytes == expected
