"""The Python LFS SDK (lfs Resolver, Record, PayloadStream) against the real SeaweedFS sandbox."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from kafka_lfs_relay.sandbox import KafkaCluster, S3Server
from lfs import (
    ChecksumError,
    Envelope,
    LfsError,
    ObjectNotAllowedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Record,
    Resolver,
    SizeError,
    UnverifiedError,
)
from lfs.s3 import S3Settings
from tests.conftest import TopicFactory
from tests.integration.hydrate_support import Rec, envelope_for, produce_records, unique_prefix

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lfs_consumer.py"
KIB = 1024


def settings(server: S3Server) -> S3Settings:
    """Connection settings for the sandbox S3 server."""
    return S3Settings(
        bucket=None,
        endpoint_url=server.endpoint_url,
        region=server.region,
        path_style=True,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )


@pytest.fixture
def resolver(s3_server: S3Server) -> Iterator[Resolver]:
    """A resolver on the sandbox bucket with 64 KiB parts, so small objects already span several GETs."""
    with Resolver(settings(s3_server), [s3_server.bucket], part_size=64 * KIB, concurrency=3) as res:
        yield res


@pytest.mark.parametrize("size", [0, 1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 1000 * KIB + 7])
def test_fetch_returns_the_payload_whatever_its_size_and_part_count(
    size: int, resolver: Resolver, s3_server: S3Server
) -> None:
    """A payload of any size, in one ranged GET or many, comes back byte for byte."""
    data = os.urandom(size)
    assert resolver.fetch(envelope_for(s3_server, f"{unique_prefix()}/o", data)) == data


@pytest.mark.parametrize("alg", ["md5", "crc32", "sha256", None])
def test_kafscale_envelope_with_each_checksum_algorithm_unwraps(
    alg: str | None, resolver: Resolver, s3_server: S3Server
) -> None:
    """A hand-written KafScale envelope with an md5, crc32 or sha256 checksum unwraps to its payload."""
    data = os.urandom(200 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, alg=alg)
    assert resolver.unwrap(env.encode()) == (env, data)


def test_legacy_lfs_version_envelope_unwraps(resolver: Resolver, s3_server: S3Server) -> None:
    """An envelope in the documented-only lfs_version shape, fields in any order, unwraps to its payload."""
    data = os.urandom(100 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, alg="md5")
    legacy = Envelope(
        bucket=env.bucket,
        key=env.key,
        size=env.size,
        sha256=None,
        checksum=env.checksum,
        checksum_alg="md5",
        shape="lfs_version",
    )
    fields = {
        "s3_key": env.key,
        "content_length": env.size,
        "s3_bucket": env.bucket,
        "checksum_algo": "md5",
        "checksum": env.checksum,
        "lfs_version": 1,
    }
    reordered = b"  " + json.dumps(fields).encode()  # the discriminator last, far beyond any prefix test
    assert resolver.unwrap(legacy.encode("lfs_version")) == (legacy, data)
    assert resolver.unwrap(reordered)[1] == data


def test_tampered_object_raises_checksum_error(resolver: Resolver, s3_server: S3Server) -> None:
    """An object changed after its envelope was written fails with ChecksumError(expected, actual)."""
    data = os.urandom(300 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, alg="crc32")
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ChecksumError) as info:
        resolver.fetch(env)
    assert (info.value.alg, info.value.expected, info.value.kind) == ("crc32", env.checksum, "checksum_mismatch")


@pytest.mark.parametrize("actual_size", [0, 200 * KIB - 1, 200 * KIB + 1, 400 * KIB])
def test_object_of_another_length_raises_size_error(actual_size: int, resolver: Resolver, s3_server: S3Server) -> None:
    """An object shorter or longer than the envelope's size fails with SizeError naming both lengths."""
    data = os.urandom(200 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data)
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=os.urandom(actual_size))
    with pytest.raises(SizeError) as info:
        resolver.fetch(env)
    assert (info.value.expected, info.value.actual) == (200 * KIB, actual_size)


def test_deleted_object_raises_object_not_found(resolver: Resolver, s3_server: S3Server) -> None:
    """An envelope whose object was deleted fails with ObjectNotFoundError (missing_object)."""
    env = envelope_for(s3_server, f"{unique_prefix()}/o", b"payload")
    s3_server.client().delete_object(Bucket=env.bucket, Key=env.key)
    with pytest.raises(ObjectNotFoundError) as info:
        resolver.fetch(env)
    assert info.value.kind == "missing_object"


def test_refusals_happen_before_any_request(s3_server: S3Server) -> None:
    """An untrusted bucket or prefix, a dot segment, an oversize claim or no checksum is refused without touching S3."""
    unreachable = dataclasses.replace(settings(s3_server), endpoint_url="http://127.0.0.1:9", connect_timeout=0.5)
    env = envelope_for(s3_server, "tenant-a/o", b"x" * 100, store=False)
    with Resolver(unreachable, [(s3_server.bucket, ["tenant-a/"])], max_object_size=1000, retries=0) as res:
        with pytest.raises(ObjectNotAllowedError):
            res.fetch(dataclasses.replace(env, bucket="elsewhere"))
        with pytest.raises(ObjectNotAllowedError):
            res.fetch(dataclasses.replace(env, key="tenant-b/o"))
        with pytest.raises(ObjectNotAllowedError):
            res.fetch(dataclasses.replace(env, key="tenant-a/../tenant-b/o"))
        with pytest.raises(ObjectTooLargeError):
            res.fetch(dataclasses.replace(env, size=1001))
        with pytest.raises(UnverifiedError):
            res.fetch(dataclasses.replace(env, sha256=None, checksum_alg="none", shape="lfs_version"))
        with pytest.raises(LfsError) as info:  # the one envelope that passes the checks does reach S3
            res.fetch(env)
        assert info.value.kind == "unavailable"


def test_unverified_payload_is_returned_only_when_allowed(s3_server: S3Server) -> None:
    """A legacy envelope with checksum none fetches with allow_unverified, and is refused without it."""
    data = os.urandom(1000)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data)
    legacy = Envelope(
        bucket=env.bucket, key=env.key, size=len(data), sha256=None, checksum_alg="none", shape="lfs_version"
    )
    with Resolver(settings(s3_server), [s3_server.bucket], allow_unverified=True) as res:
        assert res.fetch(legacy) == data
    with Resolver(settings(s3_server), [s3_server.bucket]) as res, pytest.raises(UnverifiedError):
        res.fetch(legacy)


def test_checksum_none_envelopes_are_verified_by_their_sha256(resolver: Resolver, s3_server: S3Server) -> None:
    """KafScale's checksum_alg none envelopes carry sha256: fetched without allow_unverified, and verified by it."""
    data = os.urandom(200 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, alg="none")
    assert env.checksum_alg == "none" and env.sha256 is not None
    assert resolver.fetch(env) == data
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ChecksumError) as info:
        resolver.fetch(env)
    assert (info.value.alg, info.value.expected) == ("sha256", env.sha256)


def traced_peak(call: Callable[[], object]) -> tuple[object, int]:
    """What ``call`` returned (or raised) and the peak bytes Python allocated meanwhile (tracemalloc)."""
    tracemalloc.start()
    try:
        try:
            result: object = call()
        except LfsError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("claim", [1024**3, 4 * 1024**3, 2**62])
def test_a_forged_claim_costs_the_bytes_received_not_the_bytes_claimed(claim: int, s3_server: S3Server) -> None:
    """A claim of up to exabytes on a 4-byte object allocates next to nothing and fails with SizeError."""
    env = envelope_for(s3_server, f"{unique_prefix()}/tiny", b"four", size=claim)
    with Resolver(settings(s3_server), [s3_server.bucket], max_object_size=2**63 - 1) as res:
        for via in (res.fetch, lambda e: res.open(e).read()):
            result, peak = traced_peak(lambda via=via: via(env))  # type: ignore[misc]
            assert isinstance(result, SizeError) and result.actual == 4, result
            assert peak < 4 * 1024**2, f"{peak} bytes allocated for a 4-byte object claiming {claim}"


SIZES = st.sampled_from([0, 1, 4, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 200 * KIB + 3])


@hyp_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    actual=SIZES,
    claim=st.one_of(SIZES, st.integers(0, 2**40), st.integers(0, 2**63 - 1)),
    data=st.data(),
)
def test_fuzz_size_claims_against_real_objects(
    actual: int, claim: int, data: st.DataObject, s3_server: S3Server
) -> None:
    """For any claim against any object: the payload iff the sizes agree, else SizeError; memory follows the object."""
    payload = data.draw(st.binary(min_size=actual, max_size=actual)) if actual < 64 else os.urandom(actual)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", payload, size=claim)
    part, concurrency = 64 * KIB, 3
    with Resolver(
        settings(s3_server), [s3_server.bucket], max_object_size=2**63 - 1, part_size=part, concurrency=concurrency
    ) as res:
        result, peak = traced_peak(lambda: res.fetch(env))
    if claim == actual:
        assert result == payload
    else:
        assert isinstance(result, SizeError), result
    # The payload once (the growing buffer over-allocates by at most an eighth), the parts in flight, slack.
    assert peak < actual * 9 // 8 + concurrency * part + 2 * 1024**2, (actual, claim, peak)


def test_record_caches_its_payload_but_not_a_failed_fetch(resolver: Resolver, s3_server: S3Server) -> None:
    """Record.value() fetches once and caches; a failed fetch is retried on the next call."""
    data = os.urandom(150 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, content_type="video/mp4")
    s3_server.client().delete_object(Bucket=env.bucket, Key=env.key)
    record = Record(env.encode(), resolver)
    assert (record.is_lfs(), record.size(), record.content_type()) == (True, len(data), "video/mp4")
    with pytest.raises(ObjectNotFoundError):
        record.value()
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=data)
    assert record.value() == data
    s3_server.client().delete_object(Bucket=env.bucket, Key=env.key)
    assert record.value() == data
    with record.value_stream() as stream:
        assert stream.read() == data


def test_value_stream_verifies_the_payload_when_closed(resolver: Resolver, s3_server: S3Server) -> None:
    """value_stream() streams a good payload, and close() raises for a tampered one or an unfinished read."""
    data = os.urandom(500 * KIB)
    env = envelope_for(s3_server, f"{unique_prefix()}/o", data, alg="md5")
    with Record(env.encode(), resolver).value_stream() as stream:
        chunks = iter(lambda: stream.read(10_000), b"")
        assert b"".join(chunks) == data
    assert stream.verified
    early = Record(env.encode(), resolver).value_stream()
    early.read(100)
    with pytest.raises(LfsError, match="not verified"):
        early.close()
    s3_server.client().put_object(Bucket=env.bucket, Key=env.key, Body=b"X" + data[1:])
    tampered = Record(env.encode(), resolver).value_stream()
    with pytest.raises(ChecksumError):
        while tampered.read(64 * KIB):
            pass
    with pytest.raises(ChecksumError):
        tampered.close()


def test_s3_outage_is_retried_until_s3_is_back(tmp_path: Path) -> None:
    """With retries=None, a fetch during an S3 outage waits, retrying, and returns the payload once S3 is back."""
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        data = os.urandom(100 * KIB)
        env = envelope_for(server, "o", data)
        retries: list[str] = []
        with Resolver(
            settings(server),
            [server.bucket],
            retries=None,
            backoff=(0.1, 0.5),
            on_retry=lambda err, _n, _d: retries.append(err.kind),
        ) as res:
            server.stop()
            result: list[bytes] = []
            fetcher = threading.Thread(target=lambda: result.append(res.fetch(env)))
            fetcher.start()
            time.sleep(3)
            assert fetcher.is_alive() and retries
            server.start()
            fetcher.join(60)
        assert result == [data] and set(retries) == {"unavailable"}
    finally:
        server.stop()


def test_readme_consumer_runs_against_the_sandbox(
    kafka_cluster: KafkaCluster, s3_server: S3Server, topic_factory: TopicFactory
) -> None:
    """The README's ten-line consumer (examples/lfs_consumer.py), run unchanged, prints each record's payload size."""
    topic = topic_factory(kafka_cluster, partitions=1)
    prefix = unique_prefix()
    big = os.urandom(300 * KIB)
    env = envelope_for(s3_server, f"{prefix}/big", big, alg="crc32")
    now = int(time.time() * 1000)
    produce_records(
        kafka_cluster,
        topic,
        [Rec(0, b"a", env.encode(), (), now), Rec(0, b"b", b"small", (), now), Rec(0, b"c", None, (), now)],
    )
    env_vars = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "AWS_DEFAULT_REGION": s3_server.region,
    }
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), kafka_cluster.client_config()["bootstrap.servers"], topic, s3_server.bucket],
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [
        f"b'a' {len(big)} s3://{s3_server.bucket}/{prefix}/big",
        "b'b' 5 inline",
        "b'c' 0 inline",
    ]
