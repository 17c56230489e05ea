"""The offloading target's S3 objects against real SeaweedFS: a key is new, or already holds the same bytes.

These drive :class:`targets.lfs.upload.S3Uploader` directly, on both write paths: conditional writes
(``If-None-Match: *``, which SeaweedFS honours) and the HEAD-then-write path for servers that do not.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from prometheus_client import CollectorRegistry

from kafka_lfs_relay.sandbox import S3Server
from lfs.s3 import S3Settings
from relay.settings import Backoff
from relay.target import TargetError
from targets.lfs.config import RecordError
from targets.lfs.upload import PROBE_NAME, SHA256_METADATA, LfsMetrics, S3Uploader, Stored, UploadJob
from tests.integration.lfs_harness import MIB, incomplete_uploads, list_keys, object_bytes

pytestmark = pytest.mark.integration

PART = 5 * MIB


@pytest.fixture(params=[True, False], ids=["if-none-match", "head-then-write"])
def conditional(request: pytest.FixtureRequest) -> bool:
    """Which write path the uploader takes: forced, so both are tested against the same server."""
    value: bool = request.param
    return value


def make_uploader(server: S3Server, conditional: bool | None, prefix: str) -> S3Uploader:
    s3 = S3Settings(
        bucket=server.bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        path_style=True,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )
    return S3Uploader(s3, 2, PART, Backoff(0.05, 0.2), LfsMetrics(CollectorRegistry()), f"{prefix}/", conditional)


@pytest.fixture
def prefix() -> str:
    return f"objects-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def uploader(s3_server: S3Server, conditional: bool, prefix: str) -> Iterator[S3Uploader]:
    up = make_uploader(s3_server, conditional, prefix)
    up.start()
    try:
        yield up
    finally:
        up.close()


def job(prefix: str, data: bytes, expected: str | None = None, name: str = "o") -> UploadJob:
    return UploadJob(
        key_for=lambda sha256: f"{prefix}/{name}-{sha256}",
        data=data,
        alg="sha256",
        expected=expected,
        content_type=None,
        what=f"test/{name}@0",
    )


def store(uploader: S3Uploader, upload_job: UploadJob) -> Stored:
    try:
        return uploader.submit(upload_job).future.result(timeout=120)
    except FutureTimeout:
        raise AssertionError("the upload did not finish in 120 s") from None


def key_of(prefix: str, data: bytes, name: str = "o") -> str:
    return f"{prefix}/{name}-{hashlib.sha256(data).hexdigest()}"


def test_seaweedfs_honours_conditional_writes_and_the_probe_leaves_nothing(s3_server: S3Server, prefix: str) -> None:
    """The start-up probe finds If-None-Match honoured by SeaweedFS, and deletes its own probe object."""
    up = make_uploader(s3_server, None, prefix)
    up.start()
    try:
        assert up.conditional is True
    finally:
        up.close()
    assert not [k for k in list_keys(s3_server.client(), s3_server.bucket, prefix) if PROBE_NAME in k]


@pytest.mark.parametrize("size", [3 * MIB, 2 * PART + 17], ids=["single", "multipart"])
def test_a_new_key_is_written_with_its_sha256_as_metadata(
    size: int, uploader: S3Uploader, s3_server: S3Server, prefix: str
) -> None:
    """A free key is written; the object carries the payload's SHA-256 so a retry can compare without a read."""
    data = os.urandom(size)
    stored = store(uploader, job(prefix, data))
    assert stored.key == key_of(prefix, data) and stored.size == size
    client = s3_server.client()
    assert object_bytes(client, s3_server.bucket, stored.key) == data
    head = client.head_object(Bucket=s3_server.bucket, Key=stored.key)
    assert head["Metadata"][SHA256_METADATA] == hashlib.sha256(data).hexdigest()
    assert incomplete_uploads(client, s3_server.bucket, prefix) == []


@pytest.mark.parametrize("size", [3 * MIB, 2 * PART + 17], ids=["single", "multipart"])
@pytest.mark.parametrize("metadata", [True, False], ids=["with-metadata", "written-by-someone-else"])
def test_a_key_holding_the_same_bytes_is_kept_as_it_is(
    size: int, metadata: bool, uploader: S3Uploader, s3_server: S3Server, prefix: str
) -> None:
    """A retry (or a restart) finds its payload stored: the object is kept, compared by metadata or by a read."""
    data = os.urandom(size)
    key = key_of(prefix, data)
    client = s3_server.client()
    extra = {"Metadata": {SHA256_METADATA: hashlib.sha256(data).hexdigest()}} if metadata else {}
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=data, ContentType="x/original", **extra)
    stored = store(uploader, job(prefix, data))
    assert stored.key == key
    assert client.head_object(Bucket=s3_server.bucket, Key=key)["ContentType"] == "x/original", "it was rewritten"
    assert incomplete_uploads(client, s3_server.bucket, prefix) == []


@pytest.mark.parametrize("size", [3 * MIB, 2 * PART + 17], ids=["single", "multipart"])
@pytest.mark.parametrize("other", ["same-length", "other-length", "lying-metadata"])
def test_a_key_holding_other_bytes_stops_the_relay_and_is_left_alone(
    size: int, other: str, uploader: S3Uploader, s3_server: S3Server, prefix: str
) -> None:
    """Other bytes at the key: one error naming bucket and key, and the object is neither overwritten nor deleted."""
    data = os.urandom(size)
    key = key_of(prefix, data)
    theirs = os.urandom(size if other != "other-length" else size + 1)
    client = s3_server.client()
    extra = {"Metadata": {SHA256_METADATA: "0" * 64}} if other == "lying-metadata" else {}
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=theirs, **extra)
    with pytest.raises(TargetError) as info:
        store(uploader, job(prefix, data))
    message = str(info.value)
    assert f"s3://{s3_server.bucket}/{key} already holds other bytes" in message and "\n" not in message
    assert object_bytes(client, s3_server.bucket, key) == theirs
    assert incomplete_uploads(client, s3_server.bucket, prefix) == []


@pytest.mark.parametrize("size", [3 * MIB, 2 * PART + 17], ids=["single", "multipart"])
def test_a_checksum_mismatch_writes_nothing_and_deletes_nothing(
    size: int, uploader: S3Uploader, s3_server: S3Server, prefix: str
) -> None:
    """A payload not matching its LFS_BLOB checksum is refused before any request; objects already there stay."""
    data = os.urandom(size)
    key = key_of(prefix, data)
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=data)  # e.g. another record with these bytes
    with pytest.raises(RecordError) as info:
        store(uploader, job(prefix, data, expected="0" * 64))
    assert info.value.kind == "checksum_mismatch" and "nothing was written" in info.value.reason
    assert object_bytes(client, s3_server.bucket, key) == data
    assert list_keys(client, s3_server.bucket, prefix) == {key}
    assert incomplete_uploads(client, s3_server.bucket, prefix) == []


def test_only_uploads_an_earlier_run_left_are_aborted(s3_server: S3Server, conditional: bool, prefix: str) -> None:
    """Incomplete uploads of the key begun before the uploader started are aborted; later ones and other keys' stay."""
    client, bucket = s3_server.client(), s3_server.bucket
    data = os.urandom(2 * PART + 17)
    key = key_of(prefix, data)
    stale = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    neighbour = client.create_multipart_upload(Bucket=bucket, Key=key + "-other")["UploadId"]
    time.sleep(2.1)  # S3 reports Initiated in whole seconds: only a second or more before the start counts
    up = make_uploader(s3_server, conditional, prefix)
    up.start()
    try:
        time.sleep(1.1)
        live = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]  # another instance, at work
        store(up, job(prefix, data))
    finally:
        up.close()
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])}
    assert stale not in left, "the upload an earlier run left was not aborted"
    assert {live, neighbour} <= left, "an upload this run did not own was aborted"
    for upload_id, upload_key in ((live, key), (neighbour, key + "-other")):
        client.abort_multipart_upload(Bucket=bucket, Key=upload_key, UploadId=upload_id)
    assert object_bytes(client, bucket, key) == data
