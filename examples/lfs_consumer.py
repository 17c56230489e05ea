import sys

import boto3
from confluent_kafka import Consumer

from lfs import Resolver

bootstrap, topic, bucket = sys.argv[1:4]
resolver = Resolver(boto3.client("s3"), allowed_buckets=[bucket])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "lfs-reader", "auto.offset.reset": "earliest"})
consumer.subscribe([topic])
while (msg := consumer.poll(5.0)) is not None:
    if msg.error() is None:
        envelope, payload = resolver.unwrap(msg.value())  # fetched from S3; size and checksum verified
        print(msg.key(), len(payload or b""), f"s3://{envelope.bucket}/{envelope.key}" if envelope else "inline")
consumer.close()
