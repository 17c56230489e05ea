"""Unit tests of the lfs target's pure decisions: offload, keys, checksums, envelope fields, record errors."""

from __future__ import annotations

import hashlib
import json
import zlib
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

import pytest

from kafka_lfs_relay.config import parse_config
from kafka_lfs_relay.wiring import build_target
from lfs import Envelope, decode_envelope, is_lfs_envelope
from relay.errors import ConfigError
from relay.message import Headers, Message
from relay.metrics import RelayMetrics
from relay.settings import MIB
from relay.target import TargetError
from targets.lfs.config import (
    DEFAULT_HEADER_ALLOWLIST,
    DEFAULT_KEY_TEMPLATE,
    KeyTemplate,
    RecordError,
    build_envelope,
    created_at,
    expected_checksum,
    offload_reason,
)
from targets.lfs.target import Offload, _Offloaded, _Pending, _replace_value
from targets.lfs.upload import S3Uploader, Stored, Upload, UploadJob, _ViewReader


def msg(value: bytes | None = b"v", headers: Headers = (), topic: str = "orders", offset: int = 42) -> Message:
    return Message(b"k", value, headers, f"{topic}-copy", "primary", topic, 1, offset, 1_700_000_000_000, 100)


# -- keys ------------------------------------------------------------------------------------------


SHA = "ab" * 32


def test_default_key_is_prefix_relay_source_topic_partition_offset_sha256() -> None:
    """The default key names the relay, the source coordinates (not the target's) and the payload's SHA-256."""
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE)
    assert template.key_for(msg(), "lfs/prod", "edge", SHA) == f"lfs/prod/edge/orders/1/42-{SHA}"


def test_empty_prefix_leaves_no_leading_slash() -> None:
    """An empty prefix (and doubled slashes) leaves no empty path segment."""
    template = KeyTemplate("{prefix}//{relay}/{topic}/{partition}/{offset}/{sha256}/")
    assert template.key_for(msg(), "", "edge", SHA) == f"edge/orders/1/42/{SHA}"


def test_template_variables_and_format_specs() -> None:
    """target_topic and format specs such as zero padding are rendered."""
    template = KeyTemplate("{relay}/{target_topic}/p{partition:03d}/{offset:012d}.{sha256}.bin")
    assert template.key_for(msg(offset=7), "x", "edge", SHA) == f"edge/orders-copy/p001/000000000007.{SHA}.bin"


def test_the_relay_name_is_percent_encoded_in_keys() -> None:
    """A name with spaces or slashes becomes one path segment that cannot meet another name's."""
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE)
    assert template.key_for(msg(), "", "dr site/1", SHA) == f"dr%20site%2F1/orders/1/42-{SHA}"


def test_keys_are_distinct_for_other_relays_payloads_and_coordinates() -> None:
    """Two relays, two payloads at the same offset (a recreated topic), or two offsets never share a key."""
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE)
    keys = {
        template.key_for(msg(offset=offset), "p", relay, sha)
        for offset in (1, 12)
        for relay in ("a", "b")
        for sha in (SHA, "cd" * 32)
    }
    assert len(keys) == 8


@pytest.mark.parametrize(
    "template",
    [
        "{relay}/{topic}{partition}/{offset}-{sha256}",  # a,1 and a1... share
        "{relay}/{topic}/{partition}{offset}-{sha256}",  # 1,23 and 12,3 share
        "{relay}/{topic}/{partition}/{offset}{sha256}",
        "{relay}{topic}/{partition}/{offset}-{sha256}",
        "{relay}/{topic}/{partition}1{offset}-{sha256}",  # a digit is no separator between numbers
        "{relay}/{topic}/{partition}/{offset}a{sha256}",  # nor a hex digit before a hash
        "{relay}/{topic}{prefix}{partition}/{offset}-{sha256}",  # an empty prefix separates nothing
        "{relay}/{topic}-{target_topic}/{partition}/{offset}-{sha256}",  # '-' can be in topic names
    ],
)
def test_templates_need_a_separator_that_neither_neighbour_can_hold(template: str) -> None:
    """{topic}{partition}{offset} gives a123 for a,1,23 and for a,12,3: refused, naming the two variables."""
    with pytest.raises(ConfigError, match="separator between"):
        KeyTemplate(template)


@pytest.mark.parametrize(
    "template",
    [
        "{relay}/{topic}/{partition}/{offset}-{sha256}",
        "{relay}/{topic}/{partition}_{offset}.{sha256}",
        "{relay}:{target_topic}:{partition}:{offset}:{sha256}",
        "{prefix}{relay}/{topic}/{partition}/{offset}/{sha256}",
    ],
)
def test_templates_with_separators_are_accepted(template: str) -> None:
    """A separator any character neither neighbour can hold (/, _, ., :) is enough."""
    assert KeyTemplate(template).template == template


def test_template_errors_are_config_errors() -> None:
    """An invalid template names the given key path."""
    with pytest.raises(ConfigError) as info:
        KeyTemplate("{offset}", "somewhere.key_template")
    assert info.value.path == "somewhere.key_template"


# -- offload decision ---------------------------------------------------------------------------


def test_offload_when_larger_than_threshold_only() -> None:
    """A value over the threshold is offloaded; one exactly at it is not."""
    assert offload_reason(msg(b"x" * 11), 10, ()) == "size"
    assert offload_reason(msg(b"x" * 10), 10, ()) is None


@pytest.mark.parametrize("value", [b"", b"abc", None])
def test_lfs_blob_header_offloads_whatever_its_value(value: bytes | None) -> None:
    """An LFS_BLOB header, empty, with a checksum or null, marks a small record for offload."""
    assert offload_reason(msg(b"small", (("LFS_BLOB", value),)), MIB, ()) == "header"


def test_always_offload_topics_use_the_source_topic() -> None:
    """Topics listed in always_offload_topics are matched by source topic name."""
    assert offload_reason(msg(b"s", topic="images"), MIB, {"images"}) == "topic"
    assert offload_reason(msg(b"s", topic="orders"), MIB, {"images"}) is None
    assert offload_reason(msg(b"", topic="images"), MIB, {"images"}) == "topic"


def test_tombstones_and_envelopes_pass_through() -> None:
    """A null value, or a value that already is a valid kfs_lfs envelope, is never offloaded."""
    assert offload_reason(msg(None, (("LFS_BLOB", b""),), topic="images"), 0, {"images"}) is None
    envelope = Envelope(bucket="b", key="k", size=5, sha256="a" * 64).encode()
    assert offload_reason(msg(envelope, (("LFS_BLOB", b""),)), 0, ()) is None
    broken = b'{"kfs_lfs":1,"bucket":"b","oops":true}'
    assert is_lfs_envelope(broken)
    assert offload_reason(msg(broken), 10, ()) == "size"


# -- checksums -----------------------------------------------------------------------------------


def test_expected_checksum_from_headers() -> None:
    """LFS_BLOB holds the expected checksum (trimmed, lowercased); LFS_BLOB_ALG overrides the algorithm."""
    assert expected_checksum(msg(), "sha256") == ("sha256", None)
    assert expected_checksum(msg(headers=(("LFS_BLOB", b""),)), "md5") == ("md5", None)
    headers = (("LFS_BLOB", b" ABCDEF12 \n"), ("LFS_BLOB_ALG", b"CRC32"))
    assert expected_checksum(msg(headers=headers), "sha256") == ("crc32", "abcdef12")


def test_unknown_checksum_algorithm_is_a_record_error() -> None:
    """An unsupported LFS_BLOB_ALG is an error for that record, named by its coordinates."""
    with pytest.raises(RecordError) as info:
        expected_checksum(msg(headers=(("LFS_BLOB_ALG", b"sha1"),)), "sha256")
    assert info.value.kind == "bad_checksum_alg"
    assert "primary/orders/1@42" in info.value.reason


def _hasher_for(data: bytes, alg: str) -> Any:
    from lfs import Hasher

    hasher = Hasher(alg)
    hasher.update(data)
    return hasher


@pytest.mark.parametrize(
    ("alg", "expected", "matches"),
    [
        ("sha256", None, True),
        ("sha256", hashlib.sha256(b"data").hexdigest(), True),
        ("sha256", "0" * 64, False),
        ("md5", hashlib.md5(b"data").hexdigest(), True),
        ("crc32", f"{zlib.crc32(b'data'):08x}", True),
        ("crc32", "00000000", False),
        ("none", hashlib.sha256(b"data").hexdigest(), True),  # with none, an expected value is a SHA-256
        ("none", "deadbeef", False),
    ],
)
def test_mismatch_rule(alg: str, expected: str | None, matches: bool) -> None:
    """The payload is checked against LFS_BLOB in the record's algorithm (SHA-256 when that is none)."""
    job = UploadJob("k", b"data", alg, expected, None, "c/t/0@1")
    reason = S3Uploader._mismatch(job, _hasher_for(b"data", alg))
    assert (reason is None) == matches
    if reason is not None:
        assert "c/t/0@1" in reason and "LFS_BLOB" in reason


# -- envelope fields -----------------------------------------------------------------------------


def _envelope(alg: str, headers: Headers = (), allow: tuple[str, ...] = DEFAULT_HEADER_ALLOWLIST) -> Envelope:
    data = b"payload"
    hasher = _hasher_for(data, alg)
    return build_envelope(
        msg(data, headers),
        bucket="bkt",
        key="p/orders/1/42",
        size=len(data),
        sha256=hasher.sha256_hex(),
        alg=alg,
        checksum=hasher.hexdigest(),
        header_allowlist=allow,
        proxy_id="kafka-lfs-relay/edge",
        now=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone.utc),
    )


def test_sha256_envelope_has_no_checksum_fields() -> None:
    """With sha256 the envelope carries sha256 alone, starts with kfs_lfs, and decodes back equal."""
    env = _envelope("sha256")
    encoded = env.encode()
    assert encoded.startswith(b'{"kfs_lfs":1,"bucket":"bkt","key":"p/orders/1/42","size":7,"sha256":"')
    assert (env.checksum, env.checksum_alg) == (None, None)
    assert env.created_at == "2026-01-02T03:04:05Z" and env.proxy_id == "kafka-lfs-relay/edge"
    assert env.content_type is None and env.original_headers is None
    assert decode_envelope(encoded) == env
    assert set(json.loads(encoded)) == {
        "kfs_lfs", "bucket", "key", "size", "sha256", "created_at", "proxy_id",
    }  # fmt: skip


def test_other_algorithms_write_checksum_and_alg() -> None:
    """md5 and crc32 write checksum and checksum_alg; none writes checksum_alg only."""
    md5 = _envelope("md5")
    assert (md5.checksum_alg, md5.checksum) == ("md5", hashlib.md5(b"payload").hexdigest())
    crc = _envelope("crc32")
    assert (crc.checksum_alg, crc.checksum) == ("crc32", f"{zlib.crc32(b'payload'):08x}")
    none = _envelope("none")
    assert (none.checksum_alg, none.checksum) == ("none", None)
    for env in (md5, crc, none):
        assert env.sha256 == hashlib.sha256(b"payload").hexdigest()


def test_content_type_and_original_headers() -> None:
    """content-type comes from the header (any case); only allow-listed headers are copied, last one wins."""
    headers: Headers = (
        ("Content-Type", b"image/png"),
        ("traceparent", b"00-1"),
        ("traceparent", b"00-2"),
        ("x-secret", b"no"),
        ("message-id", b"\xff\xfe"),
        ("correlation-id", None),
    )
    env = _envelope("sha256", headers)
    assert env.content_type == "image/png"
    assert dict(env.original_headers or {}) == {
        "Content-Type": "image/png",
        "traceparent": "00-2",
        "message-id": "\ufffd\ufffd",
        "correlation-id": "",
    }
    assert _envelope("sha256", headers, allow=()).original_headers is None


def test_created_at_is_rfc3339_utc() -> None:
    """created_at is UTC to the second with a Z."""
    assert created_at(datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)) == "2026-05-06T07:08:09Z"


# -- the target's per-record decisions (no network) -------------------------------------------------


def _target(**lfs: Any) -> Offload:
    raw: dict[str, Any] = {
        "name": "edge",
        "sources": [{"bootstrap_servers": "src:9092"}],
        "topics": [{"source": "orders", "target": "orders-copy"}],
        "target": {"type": "lfs", "bootstrap_servers": "dst:9092", "lfs": {"s3": {"bucket": "b"}, **lfs}},
    }
    offload = build_target(parse_config(raw), RelayMetrics()).transform
    assert isinstance(offload, Offload)
    return offload


def test_small_records_are_not_uploaded_and_pass_unchanged() -> None:
    """A record under the threshold gets no upload and transform returns it as it is."""
    target = _target()
    record = msg(b"small")
    assert target._begin(record) is None
    assert target._transform(record) is record


def test_record_over_max_object_size_fails_before_any_upload() -> None:
    """A record over s3.max_object_size is a record error without an upload."""
    target = _target(threshold="1KiB", s3={"bucket": "b", "max_object_size": "2KiB"}, part_size="5MiB")
    upload = target._begin(msg(b"x" * 4096))
    assert upload is not None and upload.future.done()
    with pytest.raises(RecordError) as info:
        upload.result()
    assert info.value.kind == "too_large" and "max_object_size" in info.value.reason


def test_record_error_with_fail_stops_with_the_reason() -> None:
    """With on_record_error: fail, a record error becomes a TargetError carrying its reason."""
    target = _target()
    record = msg(b"x")
    failed = Upload.failed(RecordError("record primary/orders/1@42: payload does not match", "checksum_mismatch"))
    target._uploads[(record.source_topic, record.source_partition, record.source_offset)] = _Pending(failed, record)
    with pytest.raises(TargetError, match=r"payload does not match .*on_record_error is fail"):
        target._transform(_replace_value(record, None, _Offloaded))


def test_record_error_with_dead_letter_redirects_the_original_record() -> None:
    """With dead-letter, the original record goes to the dead-letter topic with a kfr-lfs-error header."""
    target = _target(on_record_error="dead-letter", dead_letter_topic="orders-dlq")
    record = msg(b"x" * 10, (("LFS_BLOB", b"00"),))
    coords = (record.source_topic, record.source_partition, record.source_offset)
    target._uploads[coords] = _Pending(Upload.failed(RecordError("bad checksum", "checksum_mismatch")), record)
    out = target._transform(_replace_value(record, None, _Offloaded))
    assert out.topic == "orders-dlq" and out.value == record.value and out.key == record.key
    assert out.headers == (("LFS_BLOB", b"00"), ("kfr-lfs-error", b"bad checksum"))
    assert (out.source_topic, out.source_partition, out.source_offset) == coords
    assert target.extra_topics == ("orders-dlq",)


# -- the part reader ------------------------------------------------------------------------------


def test_view_reader_reads_seeks_and_reports_its_length() -> None:
    """_ViewReader behaves as a seekable binary file over a slice, without copying the slice."""
    data = bytes(range(256)) * 4
    reader = _ViewReader(memoryview(data)[100:300])
    assert len(reader) == 200
    assert reader.read(10) == data[100:110] and reader.tell() == 10
    assert reader.read() == data[110:300] and reader.read(5) == b""
    assert reader.seek(0) == 0 and reader.read(None) == data[100:300]
    reader.seek(-5, 2)
    assert reader.read(100) == data[295:300]


def test_a_stored_upload_lets_go_of_the_value_and_a_lost_one_is_an_error() -> None:
    """Once stored, only the stand-in without a value remains; a stand-in without an upload never goes out."""
    target = _target()
    record = msg(b"x" * 10)
    done: Future[Stored] = Future()
    pending = _Pending(Upload(done), record)
    done.set_result(Stored("b", "k", 10, "0" * 64, "sha256", "0" * 64))
    assert pending.original is None
    with pytest.raises(TargetError, match="was lost"):
        target._transform(_replace_value(record, None, _Offloaded))
