"""Unit tests of the lfs target's configuration: target.lfs parsing, defaults, errors, and wiring."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_lfs_relay.config import RelayConfig, parse_config
from kafka_lfs_relay.wiring import build_target
from relay.errors import ConfigError
from relay.metrics import RelayMetrics
from relay.settings import MIB, ClusterConfig
from relay.target import RunTarget
from targets.kafka import KafkaTarget
from targets.lfs import Offload
from targets.lfs.config import DEFAULT_HEADER_ALLOWLIST, KeyTemplate, LfsConfig, server_side
from targets.lfs.target import _with_message_limit


def tree(lfs: dict[str, Any] | None = None, **target: Any) -> dict[str, Any]:
    """A whole relay config tree with an lfs target (``lfs=None`` leaves target.lfs out)."""
    t: dict[str, Any] = {"type": "lfs", "bootstrap_servers": "dst:9092", **target}
    if lfs is not None:
        t["lfs"] = lfs
    return {
        "name": "edge",
        "sources": [{"name": "primary", "bootstrap_servers": "src:9092"}],
        "topics": [{"source": "orders", "target": "orders-copy"}, {"source": "images"}],
        "target": t,
    }


def relay_config(lfs: dict[str, Any] | None = None, **target: Any) -> RelayConfig:
    return parse_config(tree(lfs, **target))


def parsed(**lfs: Any) -> LfsConfig:
    """parse_lfs of ``lfs`` with a bucket added unless an s3 section is given."""
    lfs.setdefault("s3", {"bucket": "payloads"})
    settings: LfsConfig = relay_config(lfs).target.settings.lfs
    return settings


def error(**lfs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parsed(**lfs)
    return info.value


def test_defaults() -> None:
    """Only s3.bucket given: 1 MiB threshold, sha256, KafScale's allow-list, 8 uploads of 8 MiB parts, fail."""
    cfg = parsed()
    assert cfg.threshold == MIB
    assert cfg.key_template == KeyTemplate("{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}")
    assert cfg.relay == "edge"
    assert cfg.checksum_alg == "sha256"
    assert cfg.content_type_default == "application/octet-stream"
    assert cfg.header_allowlist == DEFAULT_HEADER_ALLOWLIST
    assert (cfg.upload_concurrency, cfg.part_size) == (8, 8 * MIB)
    assert (cfg.on_record_error, cfg.dead_letter_topic) == ("fail", None)
    assert cfg.always_offload_topics == frozenset()
    assert cfg.proxy_id == "kafka-lfs-relay/edge"
    assert cfg.bucket == "payloads" and cfg.s3.max_object_size == 5 * 1024**3


def test_every_setting() -> None:
    """Every setting is read and normalized."""
    cfg = parsed(
        threshold="256KiB",
        always_offload_topics=["images"],
        key_template="{prefix}/{target_topic}/{relay}/{partition}/{offset:012d}.{sha256}",
        checksum_alg="CRC32",
        content_type_default="image/png",
        header_allowlist=["X-Trace"],
        upload_concurrency=3,
        part_size="16MiB",
        on_record_error="dead-letter",
        dead_letter_topic="lfs-dlq",
        proxy_id="edge-7",
        s3={"bucket": "b", "prefix": "/lfs/", "max_object_size": "1GiB", "tags": {"ttl": "7d"}},
    )
    assert cfg.threshold == 256 * 1024
    assert cfg.always_offload_topics == {"images"}
    assert cfg.checksum_alg == "crc32"
    assert cfg.header_allowlist == ("X-Trace",)
    assert (cfg.upload_concurrency, cfg.part_size) == (3, 16 * MIB)
    assert (cfg.on_record_error, cfg.dead_letter_topic, cfg.proxy_id) == ("dead-letter", "lfs-dlq", "edge-7")
    assert cfg.s3.prefix == "lfs" and dict(cfg.s3.tags) == {"ttl": "7d"}


@pytest.mark.parametrize(
    ("lfs", "path", "fragment"),
    [
        ({"s3": {}}, "target.lfs.s3.bucket", "is required"),
        ({"treshold": "1MiB"}, "target.lfs.treshold", "did you mean 'threshold'"),
        ({"threshold": "big"}, "target.lfs.threshold", "size"),
        ({"checksum_alg": "sha1"}, "target.lfs.checksum_alg", "sha256, md5, crc32, none"),
        ({"part_size": "1MiB"}, "target.lfs.part_size", "5MiB"),
        ({"upload_concurrency": 0}, "target.lfs.upload_concurrency", "at least 1"),
        ({"on_record_error": "drop"}, "target.lfs.on_record_error", "fail, dead-letter"),
        ({"on_record_error": "dead-letter"}, "target.lfs.dead_letter_topic", "is required"),
        ({"dead_letter_topic": "dlq"}, "target.lfs.dead_letter_topic", "only applies"),
        ({"on_record_error": "dead-letter", "dead_letter_topic": "a b"}, "target.lfs.dead_letter_topic", "legal"),
        (
            {"on_record_error": "dead-letter", "dead_letter_topic": "orders-copy"},
            "target.lfs.dead_letter_topic",
            "a topic of its own",
        ),
        ({"always_offload_topics": ["nope"]}, "target.lfs.always_offload_topics[0]", "source topics"),
        ({"always_offload_topics": "images"}, "target.lfs.always_offload_topics", "list"),
        ({"header_allowlist": [""]}, "target.lfs.header_allowlist[0]", "non-empty"),
        ({"key_template": "{prefix}/{relay}/{topic}/{offset}-{sha256}"}, "target.lfs.key_template", "{partition}"),
        ({"key_template": "{relay}/{partition}/{offset}-{sha256}"}, "target.lfs.key_template", "{topic}"),
        ({"key_template": "{prefix}/{topic}/{partition}/{offset}"}, "target.lfs.key_template", "{relay}, {sha256}"),
        ({"key_template": "{relay}/{topic}{partition}/{offset}-{sha256}"}, "target.lfs.key_template", "separator"),
        ({"key_template": "{relay}/{topic}/{partition}/{offset:>9}-{sha256}"}, "target.lfs.key_template", "spec"),
        ({"key_template": "{relay}/{topic:.4}/{partition}/{offset}-{sha256}"}, "target.lfs.key_template", "spec"),
        ({"key_template": "{topic}/{partition}/{offset}/{cluster}"}, "target.lfs.key_template", "unknown variable"),
        ({"key_template": "{topic!r}/{partition}/{offset}"}, "target.lfs.key_template", "conversion"),
        ({"key_template": "{topic:d}/{partition}/{offset}"}, "target.lfs.key_template", "cannot be rendered"),
        ({"key_template": "{topic}/{partition}/{offset"}, "target.lfs.key_template", "not a valid template"),
        ({"s3": {"bucket": "b", "sse": "DES"}}, "target.lfs.s3.sse", "AES256"),
        (
            {"part_size": "5MiB", "s3": {"bucket": "b", "max_object_size": "60GiB"}},
            "target.lfs.s3.max_object_size",
            "10000 parts",
        ),
    ],
)
def test_errors_name_the_key(lfs: dict[str, Any], path: str, fragment: str) -> None:
    """Each mistake is one ConfigError naming its key path."""
    exc = error(**lfs)
    assert exc.path == path, str(exc)
    assert fragment in str(exc)


def test_secret_is_never_shown() -> None:
    """A bad secret key value is redacted in the error."""
    exc = error(s3={"bucket": "b", "secret_access_key": "hunter2"})
    assert "hunter2" not in str(exc)


def test_type_lfs_without_lfs_section_is_an_error() -> None:
    """type: lfs without target.lfs is a ConfigError naming target.lfs."""
    with pytest.raises(ConfigError) as info:
        relay_config(None)
    assert info.value.path == "target.lfs"


def test_another_targets_section_with_type_lfs_is_an_error() -> None:
    """target.hydrate next to type: lfs is refused, not ignored."""
    raw = tree({"s3": {"bucket": "b"}})
    raw["target"]["hydrate"] = {"s3": {}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert info.value.path == "target.hydrate"


def test_build_target_makes_an_lfs_target() -> None:
    """type: lfs builds the Kafka target with the offload as its transform, without touching the network."""
    target = build_target(relay_config({"s3": {"bucket": "b"}, "threshold": "4MiB"}), RelayMetrics())
    assert isinstance(target, KafkaTarget) and isinstance(target, RunTarget) and isinstance(target.transform, Offload)
    # Pass-through records up to the threshold must fit librdkafka's message limit.
    assert int(target.config.cluster.kafka["message.max.bytes"]) >= 4 * MIB


def test_message_limit_respects_the_users_setting() -> None:
    """An explicit message.max.bytes is kept; a small threshold changes nothing."""
    mine = ClusterConfig("t", "dst:9092", {"message.max.bytes": "1234567"})
    assert _with_message_limit(mine, 8 * MIB) is mine
    plain = ClusterConfig("t", "dst:9092")
    assert _with_message_limit(plain, 900_000) is plain
    assert _with_message_limit(plain, 3 * MIB).kafka == {"message.max.bytes": str(3 * MIB)}


def test_rehome_defaults_to_the_targets_connection_and_a_server_side_copy() -> None:
    """rehome with allowed_buckets only: the target's endpoint and keys, CopyObject, its size cap, 4 at once."""
    s3 = {"bucket": "dr", "endpoint_url": "http://s3.dr:9000", "access_key_id": "a", "secret_access_key": "s"}
    cfg = parsed(s3=s3, rehome={"allowed_buckets": ["east", {"bucket": "west", "prefixes": ["orders/"]}]})
    rehome = cfg.rehome
    assert rehome is not None
    assert [(r.bucket, r.prefixes) for r in rehome.policy.rules] == [("east", ()), ("west", ("orders/",))]
    assert (rehome.s3.bucket, rehome.s3.endpoint_url, rehome.s3.access_key_id) == (None, "http://s3.dr:9000", "a")
    assert (rehome.copy, rehome.max_object_size, rehome.allow_unverified, rehome.concurrency) == (
        "auto", cfg.s3.max_object_size, False, 4,
    )  # fmt: skip
    assert server_side(rehome, cfg.s3)
    assert parsed().rehome is None, "re-homing is off unless configured"


def test_rehome_from_another_endpoint_streams_unless_told_to_copy_server_side() -> None:
    """A connection of its own streams through the relay (auto), or copies server-side when copy says so."""
    other = {"endpoint_url": "http://s3.east:9000", "region": "us-east-1"}
    streamed = parsed(rehome={"allowed_buckets": ["east"], "s3": other}).rehome
    assert streamed is not None and not server_side(streamed, parsed().s3)
    forced = parsed(rehome={"allowed_buckets": ["east"], "s3": other, "copy": "server"}).rehome
    assert forced is not None and server_side(forced, parsed().s3)


@pytest.mark.parametrize(
    ("rehome", "path", "says"),
    [
        ({}, "target.lfs.rehome.allowed_buckets", "is required"),
        ({"allowed_buckets": []}, "target.lfs.rehome.allowed_buckets", "at least one bucket"),
        ({"allowed_buckets": ["e"], "s3": {"bucket": "e"}}, "target.lfs.rehome.s3.bucket", "writing"),
        ({"allowed_buckets": ["e"], "s3": {"sse": "AES256"}}, "target.lfs.rehome.s3.sse", "writing"),
        ({"allowed_buckets": ["e"], "copy": "rsync"}, "target.lfs.rehome.copy", "auto"),
        ({"allowed_buckets": ["e"], "concurrency": 0}, "target.lfs.rehome.concurrency", ""),
        ({"allowed_buckets": ["e"], "concurrency": 65}, "target.lfs.rehome.concurrency", "at most 64"),
        ({"allowed_buckets": ["e"], "verify": False}, "target.lfs.rehome.verify", ""),
    ],
)
def test_rehome_mistakes_name_their_key(rehome: dict[str, Any], path: str, says: str) -> None:
    """Each mistake in target.lfs.rehome is one error naming its key path."""
    err = error(rehome=rehome)
    assert err.path == path and says in str(err)
