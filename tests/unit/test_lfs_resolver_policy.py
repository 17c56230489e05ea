"""Unit tests of the SDK's reading side without S3: detection, the allow-list, pre-fetch checks, errors, fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfs import (
    MAX_ENVELOPE_SIZE,
    BucketPolicy,
    BucketRule,
    ChecksumError,
    Envelope,
    EnvelopeError,
    LfsError,
    ObjectNotAllowedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PayloadStream,
    Record,
    Resolver,
    SizeError,
    StorageError,
    UnverifiedError,
    checksum,
    decode_envelope,
    detect,
)
from lfs._resolver import LEGACY_PARSE_LIMIT, _content_range_total
from lfs.s3 import S3Settings

SHA = checksum(b"abc")
# Nothing listens on port 9: a resolver that tried to fetch would fail with StorageError("unavailable").
NOWHERE = S3Settings(
    bucket=None,
    endpoint_url="http://127.0.0.1:9",
    region="us-east-1",
    access_key_id="k",
    secret_access_key="s",
    connect_timeout=0.2,
)


def envelope(**fields: Any) -> Envelope:
    values: dict[str, Any] = {"bucket": "b", "key": "k", "size": 3, "sha256": SHA, **fields}
    return Envelope(**values)


@pytest.fixture(scope="module")
def resolver() -> Any:
    with Resolver(NOWHERE, [("b", ["k"])], max_object_size=1000, retries=0) as res:
        yield res


# -- detection -----------------------------------------------------------------------------------


def test_detect_finds_both_shapes_and_passes_plain_data() -> None:
    """kfs_lfs and lfs_version envelopes are detected; plain data, JSON without the marker and None are not."""
    env = envelope()
    assert detect(env.encode()) == env
    legacy = envelope(checksum=SHA, checksum_alg="sha256", shape="lfs_version")
    assert detect(legacy.encode("lfs_version")) == legacy
    for plain in (None, b"", b"hello", b'{"kfs":1}', b"[1,2]", b'"kfs_lfs"'):
        assert detect(plain) is None


def test_detect_parses_for_an_lfs_version_field_anywhere_at_the_top_level() -> None:
    """A legacy envelope whose lfs_version comes last (beyond any prefix test) is still an envelope."""
    doc = {"s3_bucket": "b" * 80, "s3_key": "k", "content_length": 3, "checksum": SHA, "lfs_version": 1}
    assert detect(b"\n " + json.dumps(doc).encode()) == envelope(bucket="b" * 80, sha256=SHA, checksum=SHA)


def test_detect_leaves_data_that_merely_mentions_lfs_version_beyond_the_prefix() -> None:
    """Past the first 64 bytes, lfs_version nested deeper, in text, or in a value over the parse limit is plain."""
    pad = "p" * 70
    assert detect(json.dumps({"pad": pad, "x": {"lfs_version": 1}}).encode()) is None
    assert detect(json.dumps({"pad": pad, "note": 'the "lfs_version" field'}).encode()) is None
    assert detect(b'{not json, "pad": "' + pad.encode() + b'", "lfs_version"') is None
    big = json.dumps({"pad": "x" * LEGACY_PARSE_LIMIT, "lfs_version": 1}).encode()
    assert detect(big) is None


def test_within_the_prefix_a_mention_of_either_marker_claims_an_envelope() -> None:
    """Like KafScale's own test, a marker within the prefix window makes the value an (invalid) envelope."""
    for value in (b'{"x": {"lfs_version": 1}}', b'{"x": {"kfs_lfs": 1}, "y": 2}'):
        with pytest.raises(EnvelopeError):
            detect(value)


def test_a_value_that_looks_like_an_envelope_but_does_not_decode_is_an_error() -> None:
    """KafScale's prefix test passing, or a legacy discriminator, with a bad body raises EnvelopeError."""
    for value in (
        b'{"kfs_lfs":1,"bucket":"b"',
        b'{"kfs_lfs":2,"bucket":"b","key":"k","size":1,"sha256":"' + SHA.encode() + b'"}',
        b'{"lfs_version":1,"s3_bucket":"b"}',
        b'{"s3_key":"k","lfs_version":"1"}',
    ):
        with pytest.raises(EnvelopeError):
            detect(value)


def test_an_envelope_with_a_field_of_a_later_kafscale_is_detected_and_the_field_kept() -> None:
    """Forward compatibility as KafScale's Go reader has it: an unknown field does not make an envelope invalid."""
    found = detect(envelope().encode()[:-1] + b',"extra":1}')
    assert found == envelope() and found is not None and found.unknown_fields == {"extra": 1}


def test_a_value_longer_than_any_envelope_is_plain_data_without_a_parse() -> None:
    """An 8 MiB value that passes KafScale's prefix test is plain data; detection does not read past its length."""
    value = b'{"kfs_lfs":1,"bucket":"b","key":"k","pad":"' + b"x" * (8 * 1024 * 1024) + b'"}'
    assert detect(value) is None and detect(memoryview(value)) is None
    at_limit = value[: MAX_ENVELOPE_SIZE - 2] + b'"}'
    with pytest.raises(EnvelopeError, match="missing required field 'size'"):  # parsed: it is not longer
        detect(at_limit)


# -- the allow-list --------------------------------------------------------------------------------


def test_policy_allows_listed_buckets_and_prefixes_only() -> None:
    """A bare bucket allows every key; a bucket with prefixes only keys starting with one of them."""
    policy = BucketPolicy(["open", ("tenant", ["a/", "b/"]), BucketRule("other", ("x",))])
    assert policy.allows("open", "any/key")
    assert policy.allows("tenant", "a/1") and policy.allows("tenant", "b/2")
    assert not policy.allows("tenant", "c/1") and not policy.allows("tenant", "A/1")
    assert not policy.allows("opened", "k") and not policy.allows("Open", "k") and not policy.allows("", "k")
    assert policy.allows("other", "xyz")


@pytest.mark.parametrize("key", ["a/../b", "a/./b", "..", "./a", "a/.."])
def test_policy_refuses_dot_segments(key: str) -> None:
    """A key with a '.' or '..' segment is refused even in an open bucket (servers may normalize it)."""
    with pytest.raises(ObjectNotAllowedError, match="path segment"):
        BucketPolicy(["open"]).check("open", key)


def test_policy_fails_closed() -> None:
    """An empty policy, a bucket listed twice or an empty prefix is a ValueError."""
    for rules in ([], ["a", "a"], [("a", [""])], [("a", "prefix/")], [""]):
        with pytest.raises(ValueError):
            BucketPolicy(rules)  # type: ignore[arg-type]


# -- checks before any request ----------------------------------------------------------------------


def test_check_refuses_without_io(resolver: Resolver) -> None:
    """Untrusted location, oversize claim and nothing to verify are refused by check(); a good envelope passes."""
    resolver.check(envelope(key="k/1"))
    with pytest.raises(ObjectNotAllowedError):
        resolver.check(envelope(bucket="c", key="k/1"))
    with pytest.raises(ObjectTooLargeError) as too_large:
        resolver.check(envelope(key="k/1", size=1001))
    assert (too_large.value.size, too_large.value.limit) == (1001, 1000)
    unverifiable = envelope(key="k/1", sha256=None, checksum_alg="none", shape="lfs_version")
    with pytest.raises(UnverifiedError, match="nothing to verify"):
        resolver.check(unverifiable)


def test_checksum_none_with_sha256_is_verified_not_refused(resolver: Resolver) -> None:
    """KafScale's none envelopes (ours included) carry sha256: check() passes them and the fetch verifies sha256."""
    resolver.check(envelope(key="k/1", checksum_alg="none"))
    assert envelope(checksum_alg="none").digests() == (("sha256", SHA),)


def test_unwrap_of_plain_values_needs_no_s3(resolver: Resolver) -> None:
    """Plain values come back unchanged (bytes-like as bytes), None as None, without any request."""
    assert resolver.unwrap(b"plain") == (None, b"plain")
    assert resolver.unwrap(bytearray(b"ba")) == (None, b"ba")
    assert resolver.unwrap(None) == (None, None)


def test_a_fetch_that_cannot_reach_s3_is_a_storage_error(resolver: Resolver) -> None:
    """With retries=0 an unreachable S3 fails the fetch with StorageError(unavailable), retriable."""
    with pytest.raises(StorageError) as info:
        resolver.fetch(envelope(key="k/1"))
    assert info.value.kind == "unavailable" and info.value.retriable


def test_ranges_cover_the_payload_and_one_byte_more() -> None:
    """Parts are part_size long and the last one asks for one byte past the claimed size."""
    res = Resolver(NOWHERE, ["b"], part_size=10)
    assert list(res._ranges(0)) == [(0, 0)]
    assert list(res._ranges(5)) == [(0, 5)]
    assert list(res._ranges(10)) == [(0, 10)]
    assert list(res._ranges(11)) == [(0, 9), (10, 11)]
    assert list(res._ranges(25)) == [(0, 9), (10, 19), (20, 25)]
    assert list(res._ranges(30)) == [(0, 9), (10, 19), (20, 30)]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 2**63 - 1), part=st.integers(1, 2**40))
def test_ranges_are_made_as_they_are_asked_for_whatever_the_claim(nowhere_client: Any, size: int, part: int) -> None:
    """Ranges are a lazy sequence: the first few of any claim come at once (a list of them is sized by the claim)."""
    res = Resolver(nowhere_client, ["b"], part_size=part)
    first = list(itertools.islice(res._ranges(size), 3))
    assert first[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in itertools.pairwise(first))
    if size <= 3 * part:
        assert list(res._ranges(size)) == first and first[-1][1] == size
    else:
        assert all(end - start + 1 == part for start, end in first)


def test_content_range_total() -> None:
    """The complete length is read from both Content-Range forms; anything else is unknown."""
    assert _content_range_total("bytes 0-9/100") == 100
    assert _content_range_total("bytes */0") == 0
    assert _content_range_total("bytes 0-9/*") is None
    assert _content_range_total(None) is None


def test_resolver_rejects_nonsense_settings() -> None:
    """Bad concurrency, part size, retries or backoff are ValueErrors."""
    for kwargs in (
        {"concurrency": 0},
        {"part_size": 0},
        {"retries": -1},
        {"backoff": (0.0, 1.0)},
        {"backoff": (2.0, 1.0)},
        {"max_object_size": -1},
    ):
        with pytest.raises(ValueError):
            Resolver(NOWHERE, ["b"], **kwargs)


# -- legacy encoding ---------------------------------------------------------------------------------


def test_legacy_encoding_round_trips_and_puts_the_discriminator_first() -> None:
    """An envelope encoded in the lfs_version shape starts with lfs_version and decodes to the same fields."""
    env = envelope(checksum=checksum(b"abc", "crc32"), checksum_alg="crc32", content_type="text/plain")
    value = env.encode("lfs_version")
    assert value.startswith(b'{"lfs_version":1,')
    decoded = decode_envelope(value)
    assert dataclasses.replace(decoded, sha256=SHA) == env and decoded.shape == "lfs_version"


def test_legacy_encoding_refuses_fields_it_cannot_carry() -> None:
    """original_headers, created_at and proxy_id cannot be written in the lfs_version shape."""
    for fields in ({"original_headers": {"a": "b"}}, {"created_at": "2026-01-01T00:00:00Z"}, {"proxy_id": "p"}):
        with pytest.raises(EnvelopeError):
            envelope(**fields).encode("lfs_version")
    with pytest.raises(EnvelopeError):
        envelope().encode("json")  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------------------------------


ERRORS: list[LfsError] = [
    ObjectNotAllowedError("b", "k", "the bucket is not in the allow-list"),
    ObjectTooLargeError("b", "k", 10, 5),
    UnverifiedError("b", "k"),
    ObjectNotFoundError("b", "k"),
    SizeError(10, 9, "s3://b/k"),
    SizeError(10, None),
    StorageError("access_denied", "b", "k", "AccessDenied: Access Denied"),
    ChecksumError("aa", "bb", "md5"),
]


@pytest.mark.parametrize("err", ERRORS)
def test_every_error_is_an_lfs_error_with_a_kind_and_survives_pickling(err: LfsError) -> None:
    """Each error has a stable kind and pickles to the same type, kind and message."""
    assert isinstance(err, LfsError) and err.kind != "error"
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), clone.kind, str(clone)) == (type(err), err.kind, str(err))


def test_untrusted_locations_are_escaped_and_shortened_in_messages() -> None:
    """A key with control characters is shown escaped, and a huge key is cut."""
    assert "\\n" in str(ObjectNotFoundError("b", "a\nb")) and "\n" not in str(ObjectNotFoundError("b", "a\nb"))
    assert len(str(ObjectNotFoundError("b", "k" * 10_000))) < 300


# -- streams and records ---------------------------------------------------------------------------------


def test_payload_stream_of_bytes_reads_like_a_file() -> None:
    """A stream over bytes reads in pieces, works with readinto and io helpers, and closes quietly at the end."""
    stream = PayloadStream.of_bytes(b"0123456789")
    assert stream.read(3) == b"012"
    buf = bytearray(4)
    assert stream.readinto(buf) == 4 and bytes(buf) == b"3456"
    assert io.BufferedReader(stream).read() == b"789"
    assert stream.verified


def test_record_of_plain_value_needs_no_resolver() -> None:
    """A plain record answers from its value; an envelope without a resolver cannot be fetched."""
    plain = Record(b"hello")
    assert (plain.is_lfs(), plain.envelope(), plain.size(), plain.value(), plain.content_type()) == (
        False,
        None,
        5,
        b"hello",
        None,
    )
    assert Record(None).value() is None and Record(None).size() == 0
    env = Record(envelope().encode())
    assert env.is_lfs() and env.size() == 3
    with pytest.raises(LfsError, match="no resolver"):
        env.value()
    bad = Record(b'{"kfs_lfs":1,"bucket":')
    assert bad.is_lfs()
    with pytest.raises(EnvelopeError):
        bad.size()


# -- fuzzing: nothing but the SDK's own errors ------------------------------------------------------------

FIELDS = st.sampled_from(
    [
        "kfs_lfs",
        "lfs_version",
        "bucket",
        "key",
        "size",
        "sha256",
        "checksum",
        "checksum_alg",
        "s3_bucket",
        "s3_key",
        "content_length",
        "checksum_algo",
        "original_headers",
        "x",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def must_only_raise_lfs_errors(resolver: Resolver, value: bytes) -> None:
    """detect, unwrap and Record either succeed or raise an LfsError, whatever ``value`` is."""
    with contextlib.suppress(LfsError):
        detect(value)
    with contextlib.suppress(LfsError):
        resolver.unwrap(value)
    record = Record(value, resolver)
    record.is_lfs()
    with contextlib.suppress(LfsError):
        record.size()
        record.value()


@settings(max_examples=400, deadline=None)
@given(value=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(resolver: Resolver, value: bytes) -> None:
    """Arbitrary bytes never raise anything but an LfsError subclass."""
    must_only_raise_lfs_errors(resolver, value)


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from([b'{"kfs_lfs":1,', b'{"lfs_version":1,', b'{"kfs_lfs":', b" {"]),
    rest=st.binary(max_size=200),
)
def test_fuzz_bytes_after_a_marker(resolver: Resolver, prefix: bytes, rest: bytes) -> None:
    """Bytes after an envelope-looking prefix never raise anything but an LfsError subclass."""
    must_only_raise_lfs_errors(resolver, prefix + rest)


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(FIELDS, JSON, max_size=10), order=st.randoms())
def test_fuzz_envelope_shaped_json(resolver: Resolver, doc: dict[str, Any], order: Any) -> None:
    """JSON objects with envelope field names and arbitrary values never raise anything but an LfsError."""
    items = list(doc.items())
    order.shuffle(items)
    must_only_raise_lfs_errors(resolver, json.dumps(dict(items)).encode())


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_envelopes(resolver: Resolver, data: st.DataObject) -> None:
    """A valid envelope with bytes flipped, cut or inserted never raises anything but an LfsError."""
    value = bytearray(envelope(key="k/1", original_headers={"a": "b"}).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(value) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            value[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del value[at:]
            if not value:
                break
        else:
            value[at:at] = data.draw(st.binary(min_size=1, max_size=5))
    must_only_raise_lfs_errors(resolver, bytes(value))


# -- size claims ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nowhere_client() -> Any:
    """One client for the unreachable endpoint, shared by many resolvers."""
    from lfs.s3 import make_client

    return make_client(NOWHERE)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 2**63 - 1), limit=st.integers(0, 2**40), via=st.sampled_from(["check", "fetch", "open"]))
def test_fuzz_a_claim_over_the_maximum_is_refused_before_any_request(
    nowhere_client: Any, size: int, limit: int, via: str
) -> None:
    """Whatever size an envelope claims, one over max_object_size is refused with no request and nothing allocated."""
    with Resolver(nowhere_client, ["b"], max_object_size=limit, retries=0) as res:
        env = envelope(size=size)
        if size <= limit:
            res.check(env)
            return
        with pytest.raises(ObjectTooLargeError) as info:
            {"check": res.check, "fetch": res.fetch, "open": res.open}[via](env)
        assert (info.value.size, info.value.limit) == (size, limit)
        assert res._pool is None, "a worker pool was started: something was about to be fetched"


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 2**63 - 1), value_size=st.sampled_from(["claim", "tiny"]))
def test_fuzz_a_decoded_claim_is_only_a_number(size: int, value_size: str) -> None:
    """Decoding an envelope claiming any size costs what its JSON costs: the claim allocates nothing."""
    import tracemalloc

    value = envelope(size=size, key="k" if value_size == "tiny" else "k" * 100).encode()
    tracemalloc.start()
    try:
        found = detect(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found is not None and found.size == size
    assert peak < 64 * 1024
