"""The plain confluent-kafka baseline: consume -> produce in one loop, nothing else.

``python -m bench.plain_loop --source HOST:PORT --target HOST:PORT --topic T --out T2``: assigns every
partition of ``T`` from the beginning (no consumer group), produces each record to the same
partition of ``T2`` with an idempotent producer (same batching as our relay's target), stops at
the end offsets seen at start and flushes. No filters, no transactions, no resume positions.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from bench.clusters import CONSUMER_FETCH, PRODUCER_BATCHING
from relay import logs
from relay.logs import librdkafka_logger

SETTINGS = {
    "consumer": {**CONSUMER_FETCH, "assignment": "every partition from the beginning", "batch": "consume(2000)"},
    "producer": {**PRODUCER_BATCHING, "enable.idempotence": "true", "transactions": "none"},
}


def main(argv: Sequence[str] | None = None) -> int:
    """Copy the topic once; exit 0 when every record up to the start-time end offsets is acknowledged."""
    parser = argparse.ArgumentParser(prog="bench.plain_loop")
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logs.configure("warning")
    consumer = Consumer(
        {
            "bootstrap.servers": args.source,
            "group.id": f"plain-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **CONSUMER_FETCH,
            "logger": librdkafka_logger(),
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.target,
            **PRODUCER_BATCHING,
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "logger": librdkafka_logger(),
        }
    )
    partitions = len(consumer.list_topics(args.topic, timeout=10).topics[args.topic].partitions)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1] for p in range(partitions)}
    left = {p for p, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in left])
    produce = producer.produce
    out = args.out
    while left:
        for msg in consumer.consume(2000, 0.2):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.discard(msg.partition())
                    continue
                print(f"consume error: {err}", file=sys.stderr)
                return 1
            partition = msg.partition()
            while True:
                try:
                    produce(
                        out,
                        msg.value(),
                        msg.key(),
                        partition=partition,
                        headers=msg.headers(),
                        timestamp=msg.timestamp()[1],
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            if msg.offset() + 1 >= ends[partition]:
                left.discard(partition)
        producer.poll(0)
    remaining = producer.flush(120)
    consumer.close()
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
