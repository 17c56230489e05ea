"""The sandbox's SeaweedFS S3 server, exercised for real: authentication, multipart, restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kafka_lfs_relay.sandbox.process import pid_alive
from kafka_lfs_relay.sandbox.s3 import S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def test_put_then_get_round_trips(s3_server: S3Server) -> None:
    """An object put with the server's credentials reads back byte for byte."""
    client = s3_server.client()
    body = os.urandom(1000)
    client.put_object(Bucket=s3_server.bucket, Key="small/object.bin", Body=body)
    got = client.get_object(Bucket=s3_server.bucket, Key="small/object.bin")["Body"].read()
    assert got == body


def test_multipart_upload_round_trips(s3_server: S3Server) -> None:
    """A multipart upload of three 5 MiB parts and a short tail reads back byte for byte."""
    client = s3_server.client()
    bucket, key = s3_server.bucket, "multipart/object.bin"
    chunks = [os.urandom(5 * MIB) for _ in range(3)] + [os.urandom(123_457)]
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    for number, chunk in enumerate(chunks, start=1):
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == b"".join(chunks)


def test_wrong_secret_key_is_refused(s3_server: S3Server) -> None:
    """A request signed with the right key id but a wrong secret fails with SignatureDoesNotMatch."""
    info = s3_server.info()
    client = boto3.client(
        "s3",
        endpoint_url=info["endpoint_url"],
        region_name=info["region"],
        aws_access_key_id=info["access_key_id"],
        aws_secret_access_key=info["secret_access_key"] + "x",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=info["bucket"], Key="anything")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_restart_keeps_objects(tmp_path: Path) -> None:
    """An object written before stop() is still there after start() on the same ports."""
    server = S3Server(tmp_path)
    server.start()
    try:
        endpoint = server.endpoint_url
        server.client().put_object(Bucket=server.bucket, Key="kept", Body=b"survives a restart")
        server.stop()
        server.start()
        assert server.endpoint_url == endpoint
        got = server.client().get_object(Bucket=server.bucket, Key="kept")["Body"].read()
        assert got == b"survives a restart"
    finally:
        server.kill()


def test_from_state_stops_a_server_started_elsewhere(tmp_path: Path) -> None:
    """A server rebuilt from state() alone, with no Popen, can stop the running weed process."""
    server = S3Server(tmp_path)
    server.start()
    try:
        pid = server.pid
        assert pid is not None
        S3Server.from_state(server.state()).stop()
        assert not pid_alive(pid)
    finally:
        server.kill()
