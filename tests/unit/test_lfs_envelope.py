"""Unit tests of the lfs envelope: encoding, detection, decoding (strict on known fields, keeping others), fuzzing."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfs import (
    MAX_ENVELOPE_SIZE,
    Envelope,
    EnvelopeError,
    checksum,
    decode_envelope,
    is_lfs_envelope,
    looks_like_legacy_envelope,
)

SHA = checksum(b"abc", "sha256")
MD5 = checksum(b"abc", "md5")
CRC = checksum(b"abc", "crc32")
SECRET = "TOPSECRETPAYLOAD"
KFS_FIELDS = [
    "kfs_lfs",
    "bucket",
    "key",
    "size",
    "sha256",
    "checksum",
    "checksum_alg",
    "content_type",
    "original_headers",
    "created_at",
    "proxy_id",
]
LEGACY_FIELDS = [
    "lfs_version",
    "s3_bucket",
    "s3_key",
    "content_type",
    "content_length",
    "checksum_algo",
    "checksum",
]


def minimal(**changes: Any) -> Envelope:
    """An envelope with only the required fields, optionally changed."""
    return dataclasses.replace(Envelope(bucket="b", key="k", size=3, sha256=SHA), **changes)


def full() -> Envelope:
    """An envelope with every optional field set."""
    return Envelope(
        bucket="lfs-bucket",
        key="default/orders/lfs/2026/02/01/obj-0b6e",
        size=3,
        sha256=SHA,
        checksum=MD5,
        checksum_alg="md5",
        content_type="application/pdf",
        original_headers={"content-type": "application/pdf", "traceparent": "00-ab-cd-01"},
        created_at="2026-02-01T12:00:00Z",
        proxy_id="lfs-proxy-0",
    )


def doc(**fields: Any) -> bytes:
    """A kfs_lfs value with the required fields, then ``fields`` (None deletes a field)."""
    base: dict[str, Any] = {"kfs_lfs": 1, "bucket": "b", "key": "k", "size": 3, "sha256": SHA}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def legacy(**fields: Any) -> bytes:
    """A legacy lfs_version value with the required fields and a sha256 checksum, then ``fields``."""
    base: dict[str, Any] = {
        "lfs_version": 1,
        "s3_bucket": "kafscale",
        "s3_key": "lfs/default/demo-topic/0/42-abc123.bin",
        "content_type": "application/octet-stream",
        "content_length": 3,
        "checksum_algo": "sha256",
        "checksum": SHA,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def decode_error(value: bytes) -> EnvelopeError:
    """The EnvelopeError that decoding ``value`` raises."""
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(value)
    return info.value


# --- encoding -------------------------------------------------------------------------------


def test_encode_starts_with_kfs_lfs_version() -> None:
    """An encoded envelope starts with {"kfs_lfs":1, (discriminator first, compact)."""
    assert full().encode().startswith(b'{"kfs_lfs":1,')


def test_encode_puts_marker_within_first_50_bytes() -> None:
    """Even with a long bucket and key, "kfs_lfs" lies within the first 50 bytes."""
    value = minimal(bucket="b" * 200, key="k" * 500).encode()
    assert b'"kfs_lfs"' in value[:50]


def test_encode_is_detected_by_prefix_test() -> None:
    """KafScale's prefix test recognizes every envelope we write."""
    assert is_lfs_envelope(minimal().encode())


def test_encode_is_compact() -> None:
    """The encoding has no whitespace between tokens."""
    assert full().encode() == json.dumps(json.loads(full().encode()), separators=(",", ":")).encode()


def test_encode_minimal_has_only_required_fields() -> None:
    """An envelope without optional fields encodes exactly kfs_lfs, bucket, key, size, sha256."""
    assert set(json.loads(minimal().encode())) == {"kfs_lfs", "bucket", "key", "size", "sha256"}


def test_encode_full_has_no_extra_fields() -> None:
    """A fully populated envelope encodes KafScale's eleven fields and nothing else."""
    assert set(json.loads(full().encode())) == set(KFS_FIELDS)


def test_encode_field_order_matches_kafscale() -> None:
    """Fields are written in KafScale's order."""
    assert list(json.loads(full().encode())) == KFS_FIELDS


def test_encode_writes_headers_as_object() -> None:
    """original_headers is written as a JSON object of strings."""
    assert json.loads(full().encode())["original_headers"] == {
        "content-type": "application/pdf",
        "traceparent": "00-ab-cd-01",
    }


def test_encode_keeps_non_ascii_text() -> None:
    """Non-ASCII text is written as UTF-8 and decodes back unchanged."""
    env = minimal(key="lfs/größe/日本")
    assert decode_envelope(env.encode()).key == "lfs/größe/日本"


def test_encode_round_trip() -> None:
    """Decoding an encoded envelope gives an equal envelope."""
    assert decode_envelope(full().encode()) == full()


def test_encode_without_sha256_is_refused() -> None:
    """A legacy envelope whose SHA-256 is unknown cannot be written as kfs_lfs."""
    env = decode_envelope(legacy(checksum_algo="md5", checksum=MD5))
    with pytest.raises(EnvelopeError, match="sha256"):
        env.encode()


# --- construction ---------------------------------------------------------------------------


def test_envelope_is_hashable() -> None:
    """Envelopes, including their headers, are hashable and equal ones hash alike."""
    assert hash(full()) == hash(full())


def test_headers_are_read_only() -> None:
    """original_headers cannot be modified through the envelope."""
    headers = full().original_headers
    assert headers is not None
    with pytest.raises(TypeError):
        headers["x"] = "y"  # type: ignore[index]


def test_headers_are_copied() -> None:
    """Changing the dict passed as original_headers does not change the envelope."""
    given_headers = {"a": "1"}
    env = minimal(original_headers=given_headers)
    given_headers["a"] = "2"
    assert env.original_headers == {"a": "1"}


def test_empty_optionals_become_none() -> None:
    """Empty optional strings and an empty header mapping are stored as None."""
    env = minimal(content_type="", proxy_id="", original_headers={})
    assert (env.content_type, env.proxy_id, env.original_headers) == (None, None, None)


def test_constructor_validates() -> None:
    """Building an Envelope with a negative size raises EnvelopeError."""
    with pytest.raises(EnvelopeError, match="validate envelope failed: field 'size'"):
        minimal(size=-1)


def test_constructor_normalizes_case() -> None:
    """Uppercase hex digests and algorithm names are stored lowercase."""
    env = minimal(sha256=SHA.upper(), checksum=CRC.upper(), checksum_alg="CRC32")
    assert (env.sha256, env.checksum, env.checksum_alg) == (SHA, CRC, "crc32")


def test_kfs_shape_requires_sha256() -> None:
    """A kfs_lfs envelope cannot be built without sha256."""
    with pytest.raises(EnvelopeError, match="sha256"):
        minimal(sha256=None)


# --- expected_checksum ----------------------------------------------------------------------


def test_expected_checksum_md5() -> None:
    """With md5 the reader verifies against the md5 checksum."""
    assert minimal(checksum=MD5, checksum_alg="md5").expected_checksum() == ("md5", MD5)


def test_expected_checksum_crc32() -> None:
    """With crc32 the reader verifies against the crc32 checksum."""
    assert minimal(checksum=CRC, checksum_alg="crc32").expected_checksum() == ("crc32", CRC)


def test_expected_checksum_defaults_to_sha256_field() -> None:
    """Without checksum or algorithm the reader verifies the sha256 field."""
    assert minimal().expected_checksum() == ("sha256", SHA)


def test_expected_checksum_sha256_prefers_checksum() -> None:
    """With sha256 and a checksum the reader verifies against checksum."""
    env = minimal(checksum=SHA, checksum_alg="sha256")
    assert env.expected_checksum() == ("sha256", SHA)


def test_expected_checksum_none_skips() -> None:
    """With none there is nothing to verify."""
    assert minimal(checksum_alg="none").expected_checksum() == ("none", "")


def test_digests_include_sha256_whatever_the_algorithm() -> None:
    """digests() is everything a reader verifies: the checksum unless none, and sha256 whenever it is set."""
    assert minimal().digests() == (("sha256", SHA),)
    assert minimal(checksum_alg="md5", checksum=MD5).digests() == (("md5", MD5), ("sha256", SHA))
    assert minimal(checksum_alg="none").digests() == (("sha256", SHA),)
    unverifiable = Envelope(bucket="b", key="k", size=3, sha256=None, checksum_alg="none", shape="lfs_version")
    assert unverifiable.digests() == ()


def test_expected_checksum_legacy_crc32() -> None:
    """A legacy crc32 envelope verifies against its checksum."""
    assert decode_envelope(legacy(checksum_algo="crc32", checksum=CRC)).expected_checksum() == ("crc32", CRC)


# --- detection ------------------------------------------------------------------------------


def test_is_lfs_envelope_plain_data_false() -> None:
    """Ordinary record values are not envelopes."""
    assert not is_lfs_envelope(b"hello world, this is just data")


def test_is_lfs_envelope_none_false() -> None:
    """A null value is not an envelope."""
    assert not is_lfs_envelope(None)


def test_is_lfs_envelope_short_value_false() -> None:
    """A value shorter than 15 bytes is not an envelope even if it contains the marker."""
    assert not is_lfs_envelope(b'{"kfs_lfs":1}')


def test_is_lfs_envelope_fifteen_bytes_true() -> None:
    """A 15-byte value starting with { and containing the marker passes the prefix test."""
    assert is_lfs_envelope(b'{"kfs_lfs":1 }x')


def test_is_lfs_envelope_marker_beyond_50_false() -> None:
    """The marker past byte 50 is not seen."""
    value = b'{"pad":"' + b"x" * 50 + b'","kfs_lfs":1}'
    assert not is_lfs_envelope(value)


def test_is_lfs_envelope_marker_ending_at_50_true() -> None:
    """A marker whose last byte is byte 50 is seen."""
    value = b'{"p":"' + b"x" * 33 + b'","kfs_lfs":1}'
    assert value.index(b'"kfs_lfs"') + len(b'"kfs_lfs"') == 50
    assert is_lfs_envelope(value)


def test_is_lfs_envelope_leading_space_false() -> None:
    """A value that does not start with { is not an envelope."""
    assert not is_lfs_envelope(b' {"kfs_lfs":1,"bucket":"b"}')


def test_is_lfs_envelope_accepts_memoryview() -> None:
    """Detection works on a memoryview of the value."""
    assert is_lfs_envelope(memoryview(minimal().encode()))


def test_legacy_prefix_test_true() -> None:
    """The documented legacy shape is recognized by its prefix."""
    assert looks_like_legacy_envelope(legacy())


def test_legacy_prefix_test_false_for_kfs() -> None:
    """A kfs_lfs envelope is not taken for the legacy shape."""
    assert not looks_like_legacy_envelope(minimal().encode())


def test_legacy_prefix_test_false_for_none_and_data() -> None:
    """Null and plain values are not legacy envelopes."""
    assert not looks_like_legacy_envelope(None)
    assert not looks_like_legacy_envelope(b"lfs_version")


# --- decoding: accepted shapes --------------------------------------------------------------


def test_decode_kafscale_written_envelope() -> None:
    """A value as KafScale's Go writer emits it, with headers and created_at, decodes fully."""
    value = (
        b'{"kfs_lfs":1,"bucket":"kafscale-lfs","key":"default/orders/lfs/2026/02/01/obj-6f1c",'
        b'"size":10485760,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",'
        b'"checksum":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",'
        b'"checksum_alg":"sha256","content_type":"application/octet-stream",'
        b'"original_headers":{"content-type":"application/octet-stream","x-request-id":"r-42"},'
        b'"created_at":"2026-02-01T12:00:00Z","proxy_id":"lfs-proxy-0"}'
    )
    env = decode_envelope(value)
    assert (env.bucket, env.size, env.created_at, env.proxy_id, env.shape) == (
        "kafscale-lfs",
        10485760,
        "2026-02-01T12:00:00Z",
        "lfs-proxy-0",
        "kfs_lfs",
    )
    assert env.original_headers == {"content-type": "application/octet-stream", "x-request-id": "r-42"}


def test_decode_pretty_printed_envelope() -> None:
    """Whitespace between tokens, as in KafScale's docs, is accepted."""
    value = json.dumps(json.loads(doc(content_type="text/plain")), indent=2).encode()
    assert decode_envelope(value).content_type == "text/plain"


def test_decode_legacy_shape() -> None:
    """The documented lfs_version shape decodes with its fields mapped."""
    env = decode_envelope(legacy())
    assert (env.bucket, env.key, env.size, env.content_type, env.checksum_alg, env.shape) == (
        "kafscale",
        "lfs/default/demo-topic/0/42-abc123.bin",
        3,
        "application/octet-stream",
        "sha256",
        "lfs_version",
    )


def test_decode_legacy_sha256_fills_sha256() -> None:
    """A legacy sha256 checksum becomes the envelope's sha256."""
    assert decode_envelope(legacy()).sha256 == SHA


def test_decode_legacy_md5_has_no_sha256() -> None:
    """A legacy md5 envelope has sha256 None and keeps its md5 checksum."""
    env = decode_envelope(legacy(checksum_algo="md5", checksum=MD5))
    assert (env.sha256, env.checksum) == (None, MD5)


def test_decode_legacy_reencodes_as_kfs() -> None:
    """A legacy sha256 envelope re-encodes in the kfs_lfs shape and stays equal."""
    env = decode_envelope(legacy())
    value = env.encode()
    assert value.startswith(b'{"kfs_lfs":1,')
    assert decode_envelope(value) == env


def test_decode_legacy_requires_checksum() -> None:
    """A legacy envelope without checksum (and algorithm not none) is rejected."""
    assert decode_error(legacy(checksum=None)).field == "checksum"


def test_decode_legacy_ignores_and_keeps_unknown_fields() -> None:
    """The legacy shape ignores unknown fields as kfs_lfs does, and keeps them (kfs_lfs names count as unknown)."""
    env = decode_envelope(legacy(bucket="b", ttl_days=7))
    assert (env.bucket, env.key) == ("kafscale", "lfs/default/demo-topic/0/42-abc123.bin")
    assert env.unknown_fields == {"bucket": "b", "ttl_days": 7}


def test_decode_legacy_names_legacy_field() -> None:
    """Errors in a legacy value name the legacy field."""
    assert "content_length" in str(decode_error(legacy(content_length=-1)))


def test_decode_uppercase_hex_is_lowercased() -> None:
    """Uppercase hex in sha256 is accepted and stored lowercase."""
    assert decode_envelope(doc(sha256=SHA.upper())).sha256 == SHA


def test_decode_uppercase_alg_is_normalized() -> None:
    """checksum_alg is matched case-insensitively and stored lowercase."""
    assert decode_envelope(doc(checksum_alg="MD5", checksum=MD5)).checksum_alg == "md5"


def test_decode_null_optional_is_absent() -> None:
    """A null optional field is treated as absent."""
    value = b'{"kfs_lfs":1,"bucket":"b","key":"k","size":3,"sha256":"' + SHA.encode() + b'","proxy_id":null}'
    assert decode_envelope(value).proxy_id is None


def test_decode_accepts_largest_size() -> None:
    """A size of 2**63-1 (int64 max) is accepted."""
    assert decode_envelope(doc(size=2**63 - 1)).size == 2**63 - 1


# --- decoding: rejections -------------------------------------------------------------------


def test_decode_rejects_value_longer_than_any_envelope() -> None:
    """A value over MAX_ENVELOPE_SIZE is refused without a parse, naming its length, and is never detected."""
    value = doc(pad="x" * MAX_ENVELOPE_SIZE)
    assert value.startswith(b'{"kfs_lfs": 1,') and len(value) > MAX_ENVELOPE_SIZE
    assert f"{len(value)} bytes" in str(decode_error(value))
    assert not is_lfs_envelope(value) and not looks_like_legacy_envelope(legacy(pad="x" * MAX_ENVELOPE_SIZE))
    at_limit = doc(pad="x" * (MAX_ENVELOPE_SIZE - len(doc(pad=""))))
    assert len(at_limit) == MAX_ENVELOPE_SIZE and is_lfs_envelope(at_limit)
    assert decode_envelope(at_limit).unknown_fields is not None


def test_decode_ignores_and_keeps_unknown_fields() -> None:
    """As KafScale's Go reader: an unknown field is ignored, kept on the Envelope, not compared, never written."""
    env = decode_envelope(doc(compression="gzip", chunks=[1, {"a": None}], content_type="text/plain"))
    assert env.unknown_fields == {"compression": "gzip", "chunks": [1, {"a": None}]}
    assert env == minimal(content_type="text/plain") and hash(env) == hash(minimal(content_type="text/plain"))
    assert set(json.loads(env.encode())) == {"kfs_lfs", "bucket", "key", "size", "sha256", "content_type"}
    with pytest.raises(TypeError):
        env.unknown_fields["x"] = 1  # type: ignore[index]


def test_unknown_fields_must_not_hold_known_ones() -> None:
    """An Envelope built by hand cannot hide a field of its shape among the unknown ones."""
    with pytest.raises(EnvelopeError, match="'bucket'"):
        minimal(unknown_fields={"bucket": "other"})
    assert minimal(unknown_fields={}).unknown_fields is None


def test_decode_rejects_other_version() -> None:
    """A kfs_lfs version other than 1 is rejected, naming the version."""
    assert "version 2" in str(decode_error(doc(kfs_lfs=2)))


def test_decode_checks_version_before_fields() -> None:
    """A future version with new fields reports the version, not the unknown field."""
    assert "version 2" in str(decode_error(doc(kfs_lfs=2, chunks=4)))


@pytest.mark.parametrize("version", ["1", 1.0, True, None])
def test_decode_rejects_non_integer_version(version: Any) -> None:
    """The version must be the JSON integer 1."""
    value = json.dumps({"kfs_lfs": version, "bucket": "b", "key": "k", "size": 3, "sha256": SHA}).encode()
    assert decode_error(value).field == "kfs_lfs"


@pytest.mark.parametrize("name", ["bucket", "key", "size", "sha256"])
def test_decode_rejects_missing_required(name: str) -> None:
    """Each required field must be present."""
    assert decode_error(doc(**{name: None})).field == name


@pytest.mark.parametrize("bucket", ["", 5, ["b"], {"b": 1}])
def test_decode_rejects_bad_bucket(bucket: Any) -> None:
    """bucket must be a non-empty string."""
    assert decode_error(doc(bucket=bucket)).field == "bucket"


@pytest.mark.parametrize("size", [True, False, -1, 3.0, "3", 2**63, 10**30])
def test_decode_rejects_bad_size(size: Any) -> None:
    """size must be an integer (not a bool, float or string) within int64 and non-negative."""
    assert decode_error(doc(size=size)).field == "size"


@pytest.mark.parametrize("sha", [SHA[:-1], SHA + "0", "g" * 64, " " + SHA[1:], 42])
def test_decode_rejects_bad_sha256(sha: Any) -> None:
    """sha256 must be exactly 64 hex digits."""
    assert decode_error(doc(sha256=sha)).field == "sha256"


def test_decode_rejects_unsupported_alg() -> None:
    """A checksum_alg outside sha256/md5/crc32/none is rejected."""
    assert decode_error(doc(checksum_alg="sha1", checksum="0" * 40)).field == "checksum_alg"


def test_decode_rejects_md5_without_checksum() -> None:
    """md5 requires a checksum to verify against."""
    assert decode_error(doc(checksum_alg="md5")).field == "checksum"


def test_decode_rejects_checksum_of_wrong_length() -> None:
    """A crc32 checksum must be 8 hex digits."""
    assert decode_error(doc(checksum_alg="crc32", checksum="352441c")).field == "checksum"


def test_decode_rejects_disagreeing_sha256_checksum() -> None:
    """With sha256, checksum and sha256 must agree."""
    assert decode_error(doc(checksum_alg="sha256", checksum="0" * 64)).field == "checksum"


@pytest.mark.parametrize("headers", [["a"], "a", {"a": 1}, {"a": None}, {"a": {"b": "c"}}])
def test_decode_rejects_bad_headers(headers: Any) -> None:
    """original_headers must be an object mapping strings to strings."""
    assert decode_error(doc(original_headers=headers)).field == "original_headers"


def test_decode_rejects_duplicate_field() -> None:
    """A field given twice is rejected rather than resolved silently."""
    value = doc()[:-1] + b',"bucket":"other"}'
    assert decode_error(value).field == "bucket"


def test_decode_rejects_lone_surrogate() -> None:
    """A string holding an unpaired surrogate escape is rejected."""
    assert decode_error(doc(key="\ud800")).field == "key"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff\xfe{}",
        b'{"kfs_lfs":1,',
        b"[1,2,3]",
        b'"kfs_lfs"',
        b"null",
        b"{}",
        b'{"kfs_lfs":NaN}',
        b'{"kfs_lfs":1,"size":Infinity}',
        b"[" * 200_000 + b"]" * 200_000,
        b'{"kfs_lfs":1,"size":' + b"9" * 10_000 + b"}",
        b"\xef\xbb\xbf" + b'{"kfs_lfs":1}',
    ],
    ids=[
        "empty",
        "utf16",
        "truncated",
        "array",
        "string",
        "null",
        "empty-object",
        "nan",
        "inf",
        "deep",
        "huge",
        "bom",
    ],
)
def test_decode_rejects_malformed_values(value: bytes) -> None:
    """Malformed values raise EnvelopeError and nothing else."""
    decode_error(value)


def test_decode_rejects_non_bytes() -> None:
    """Passing a str instead of bytes is an EnvelopeError, not a TypeError."""
    with pytest.raises(EnvelopeError):
        decode_envelope('{"kfs_lfs":1}')  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        doc(bucket=SECRET, size=-1),
        doc(sha256=SECRET),
        doc(checksum_alg=SECRET),
        doc(kfs_lfs=SECRET),
        b'{"kfs_lfs":1,"bucket":"' + SECRET.encode() + b"\xff" + b'"}',
        b'{"kfs_lfs":1,"bucket":' + SECRET.encode() + b"}",
    ],
    ids=["bad-size", "bad-sha", "bad-alg", "bad-version", "bad-utf8", "bad-json"],
)
def test_decode_error_never_quotes_value(value: bytes) -> None:
    """Error messages and chained exceptions never carry the value's contents."""
    err = decode_error(value)
    assert SECRET not in str(err)
    assert SECRET not in repr(err.__cause__) + repr(err.__context__)


def test_decode_error_is_decode_operation() -> None:
    """Errors from decoding name the decode operation."""
    assert str(decode_error(doc(size=-1))).startswith("decode envelope failed: ")


# --- properties -----------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)


def hexes(width: int) -> st.SearchStrategy[str]:
    """Lowercase hex strings of exactly ``width`` digits."""
    return st.text("0123456789abcdef", min_size=width, max_size=width)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    """Valid kfs_lfs envelopes covering every algorithm and optional field."""
    sha = draw(hexes(64))
    alg = draw(st.sampled_from([None, "sha256", "md5", "crc32", "none"]))
    if alg in ("md5", "crc32"):
        check: str | None = draw(hexes(32 if alg == "md5" else 8))
    elif alg == "none":
        check = draw(st.none() | TEXT)
    else:
        check = draw(st.sampled_from([None, sha]))
    return Envelope(
        bucket=draw(TEXT),
        key=draw(TEXT),
        size=draw(st.integers(0, 2**63 - 1)),
        sha256=sha,
        checksum=check,
        checksum_alg=alg,
        content_type=draw(st.none() | TEXT),
        original_headers=draw(st.none() | st.dictionaries(TEXT, st.text(st.characters(codec="utf-8")), max_size=4)),
        created_at=draw(st.none() | TEXT),
        proxy_id=draw(st.none() | TEXT),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
FIELD_NAMES = st.sampled_from(KFS_FIELDS + LEGACY_FIELDS) | st.text(max_size=12)


def must_be_total(value: bytes) -> None:
    """Decode ``value``; an Envelope must re-encode stably, anything else must be EnvelopeError."""
    try:
        env = decode_envelope(value)
    except EnvelopeError:
        return
    if env.sha256 is not None:
        assert decode_envelope(env.encode()) == env


@given(env=envelopes())
def test_property_round_trip(env: Envelope) -> None:
    """Every valid envelope survives encode -> decode unchanged and re-encodes to the same bytes."""
    value = env.encode()
    back = decode_envelope(value)
    assert (back, back.encode()) == (env, value)


@given(env=envelopes())
def test_property_encoding_is_detected(env: Envelope) -> None:
    """Every encoded envelope passes KafScale's prefix test and carries only KafScale's fields."""
    value = env.encode()
    assert is_lfs_envelope(value)
    assert set(json.loads(value)) <= set(KFS_FIELDS)


@settings(max_examples=300)
@given(value=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(value: bytes) -> None:
    """Arbitrary bytes decode to an Envelope or raise EnvelopeError, nothing else."""
    must_be_total(value)


@settings(max_examples=300)
@given(value=st.binary(max_size=120))
def test_fuzz_bytes_after_marker(value: bytes) -> None:
    """Bytes following a valid-looking prefix raise EnvelopeError or decode, nothing else."""
    must_be_total(b'{"kfs_lfs":1,' + value)


@settings(max_examples=300)
@given(
    obj=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=12),
    discriminator=st.sampled_from(["kfs_lfs", "lfs_version"]),
)
def test_fuzz_json_dicts(obj: dict[str, Any], discriminator: str) -> None:
    """Arbitrary JSON objects with a discriminator decode or raise EnvelopeError, nothing else."""
    must_be_total(json.dumps({discriminator: 1, **obj}).encode())


@settings(max_examples=300)
@given(value=JSON_VALUES)
def test_fuzz_json_values(value: Any) -> None:
    """Arbitrary JSON documents decode or raise EnvelopeError, nothing else."""
    must_be_total(json.dumps(value).encode())


@settings(max_examples=300)
@given(env=envelopes(), name=FIELD_NAMES, replacement=JSON_VALUES, delete=st.booleans())
def test_fuzz_mutated_envelopes(env: Envelope, name: str, replacement: Any, delete: bool) -> None:
    """A valid envelope with one field replaced or deleted decodes or raises EnvelopeError only."""
    obj = json.loads(env.encode())
    if delete:
        obj.pop(name, None)
    else:
        obj[name] = replacement
    must_be_total(json.dumps(obj).encode())


UNKNOWN_NAMES = st.text(max_size=12).filter(lambda name: name not in KFS_FIELDS)


@settings(max_examples=200)
@given(env=envelopes(), extra=st.dictionaries(UNKNOWN_NAMES, JSON_VALUES, max_size=5))
def test_property_unknown_fields_are_kept_and_ignored(env: Envelope, extra: dict[str, Any]) -> None:
    """Any envelope with any added fields decodes to the same envelope, the added fields kept as they were."""
    obj = json.loads(env.encode())
    obj.update(extra)
    try:
        value = json.dumps(obj, allow_nan=False).encode()
    except ValueError:  # NaN or infinity: not JSON, not an envelope's business
        return
    back = decode_envelope(value)
    assert back == env and back.encode() == env.encode()
    assert dict(back.unknown_fields or {}) == json.loads(json.dumps(extra))


@settings(max_examples=50)
@given(extra=st.integers(1, 4 * MAX_ENVELOPE_SIZE), head=st.sampled_from([b'{"kfs_lfs":1,', b'{"lfs_version":1,']))
def test_property_no_value_longer_than_an_envelope_is_one(extra: int, head: bytes) -> None:
    """Whatever it starts with, a value over MAX_ENVELOPE_SIZE passes no prefix test and does not decode."""
    value = head + b" " * (MAX_ENVELOPE_SIZE - len(head) + extra)
    assert not is_lfs_envelope(value) and not looks_like_legacy_envelope(value)
    with pytest.raises(EnvelopeError, match="longer than any envelope"):
        decode_envelope(value)
