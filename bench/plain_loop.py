"""The plain confluent-kafka baseline: consume -> produce in one loop, nothing else.

``python -m bench.plain_loop --source HOST:PORT --target HOST:PORT --topic T[,T...] --out T2[,T2...] [--txn]``:
assigns every partition of each ``T`` from the beginning (no consumer group), produces each record
to the same partition of the ``T2`` paired with it by an idempotent producer (same batching as our
relay's target), stops at the end offsets seen at start and flushes. No filters, no resume
positions. ``--txn`` makes each poll (at most :data:`BATCH` records) one transaction, as
``bench/gorelay -txn`` does: the same client library as our relay under the same commit shape, so
what it reaches is what librdkafka allows on the layout. Its last line is gorelay's:
``copied N records in T transactions``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from bench.clusters import CONSUMER_FETCH, PRODUCER_BATCHING
from relay import logs
from relay.kafkautil import list_offsets
from relay.logs import librdkafka_logger

BATCH = 20_000
"""Records per poll, so per transaction with ``--txn``: our relay's ``batch.max_records``."""

SETTINGS = {
    "consumer": {**CONSUMER_FETCH, "assignment": "every partition from the beginning", "batch": "consume(2000)"},
    "producer": {**PRODUCER_BATCHING, "enable.idempotence": "true", "transactions": "none"},
}
TXN_SETTINGS = {
    "consumer": {**CONSUMER_FETCH, "isolation.level": "read_committed", "batch": f"what is fetched, at most {BATCH:,}"},
    "producer": {**PRODUCER_BATCHING, "transactions": f"one per poll of at most {BATCH:,} records"},
}


def main(argv: Sequence[str] | None = None) -> int:
    """Copy the topics once; exit 0 when every record up to the start-time end offsets is acknowledged."""
    parser = argparse.ArgumentParser(prog="bench.plain_loop")
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--topic", required=True, help="source topics, comma-separated")
    parser.add_argument("--out", required=True, help="target topics, comma-separated, one per source topic")
    parser.add_argument("--txn", action="store_true", help="one transaction per poll")
    args = parser.parse_args(argv)
    logs.configure("warning")
    topics, outs = args.topic.split(","), args.out.split(",")
    if len(topics) != len(outs):
        parser.error("--topic and --out must name as many topics")
    out_for = dict(zip(topics, outs, strict=True))
    consumer = Consumer(
        {
            "bootstrap.servers": args.source,
            "group.id": f"plain-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **({"isolation.level": "read_committed"} if args.txn else {}),
            **CONSUMER_FETCH,
            "logger": librdkafka_logger(),
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.target,
            **PRODUCER_BATCHING,
            "enable.idempotence": True,
            **({"transactional.id": f"plain-{uuid.uuid4().hex[:8]}"} if args.txn else {}),
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "logger": librdkafka_logger(),
        }
    )
    if args.txn:
        producer.init_transactions(30)
    metadata = consumer.list_topics(timeout=10).topics
    wanted = [(topic, p) for topic in topics for p in metadata[topic].partitions]
    # One request for every partition's end, as gorelay asks (kadm.ListEndOffsets), not one per partition.
    admin = AdminClient({"bootstrap.servers": args.source, "logger": librdkafka_logger()})
    latest: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    ends = list_offsets(admin, wanted, latest, IsolationLevel.READ_UNCOMMITTED, 10)
    left = {tp for tp, end in ends.items() if end > 0}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic, p in left])
    produce = producer.produce
    copied = transactions = 0
    while left:
        # --txn: what is fetched already, as gorelay's PollRecords gives it, waiting only while nothing is.
        batch = (consumer.consume(BATCH, 0) or consumer.consume(1, 0.2)) if args.txn else consumer.consume(2000, 0.2)
        records = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.discard((msg.topic(), msg.partition()))
                    continue
                print(f"consume error: {err}", file=sys.stderr)
                return 1
            tp = (msg.topic(), msg.partition())
            if msg.offset() >= ends[tp]:
                continue
            records.append(msg)
            if msg.offset() + 1 >= ends[tp]:
                left.discard(tp)
        if not records:
            continue
        if args.txn:
            producer.begin_transaction()
        for msg in records:
            while True:
                try:
                    produce(
                        out_for[msg.topic()],
                        msg.value(),
                        msg.key(),
                        partition=msg.partition(),
                        headers=msg.headers(),
                        timestamp=msg.timestamp()[1],
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        copied += len(records)
        if args.txn:
            producer.commit_transaction(60)
            transactions += 1
        producer.poll(0)
    remaining = producer.flush(120)
    consumer.close()
    print(f"copied {copied} records in {transactions} transactions")
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
