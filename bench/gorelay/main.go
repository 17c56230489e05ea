// Command gorelay is the benchmark's compiled baseline: a minimal consume -> produce loop with franz-go.
//
//	gorelay -source HOST:PORT -target HOST:PORT -topic T[,T...] -out T2[,T2...] [-txn] [-batch 20000] [-compression none]
//
// It assigns every partition of each T from the beginning (no consumer group), copies each record (key,
// value, headers, timestamp) to the same partition of its T2 (the topic at the same place in -out)
// with an idempotent, acks=all, lz4 (or
// uncompressed) producer, and stops once it has copied every record below the end offsets it saw
// at start. With -txn each poll (at most -batch records) is one transaction, committed before the
// next poll is produced, as our relay commits one transaction per batch. No filters, no resume positions, no retries: any error
// ends the run with exit status 1. The last line on stdout is "copied N records in T transactions".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// config is what the command line sets.
type config struct {
	source, target string // bootstrap servers
	topic, out     string // source and target topics, comma-separated, in pairs
	txn            bool
	batch          int
	txnID          string
	codec          kgo.CompressionCodec
}

func main() {
	var c config
	flag.StringVar(&c.source, "source", "", "source bootstrap servers")
	flag.StringVar(&c.target, "target", "", "target bootstrap servers")
	flag.StringVar(&c.topic, "topic", "", "source topics, comma-separated")
	flag.StringVar(&c.out, "out", "", "target topics, one per source topic (same partition count)")
	flag.BoolVar(&c.txn, "txn", false, "one transaction per poll")
	flag.IntVar(&c.batch, "batch", 20_000, "most records per poll (and so per transaction)")
	flag.StringVar(&c.txnID, "txn-id", fmt.Sprintf("gorelay-%d", os.Getpid()), "transactional.id with -txn")
	compression := flag.String("compression", "lz4", "target batch compression: lz4 or none")
	flag.Parse()
	codecs := map[string]kgo.CompressionCodec{"lz4": kgo.Lz4Compression(), "none": kgo.NoCompression()}
	codec, ok := codecs[*compression]
	if c.source == "" || c.target == "" || c.topic == "" || c.out == "" || c.batch < 1 || !ok {
		flag.Usage()
		os.Exit(2)
	}
	c.codec = codec
	if len(strings.Split(c.topic, ",")) != len(strings.Split(c.out, ",")) {
		fmt.Fprintln(os.Stderr, "gorelay: -topic and -out must name as many topics")
		os.Exit(2)
	}
	copied, txns, err := run(c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gorelay: %v (after %d records)\n", err, copied)
		os.Exit(1)
	}
	fmt.Printf("copied %d records in %d transactions\n", copied, txns)
}

func run(c config) (int64, int, error) {
	ctx := context.Background()
	outs := strings.Split(c.out, ",")
	outFor := map[string]string{}
	ends := map[string]map[int32]int64{}
	assign := map[string]map[int32]kgo.Offset{}
	left := 0
	for i, topic := range strings.Split(c.topic, ",") {
		outFor[topic] = outs[i]
		topicEnds, err := endOffsets(ctx, c.source, topic)
		if err != nil {
			return 0, 0, err
		}
		ends[topic] = topicEnds
		assign[topic] = map[int32]kgo.Offset{}
		for p, end := range topicEnds {
			if end > 0 {
				assign[topic][p] = kgo.NewOffset().AtStart()
				left++
			}
		}
	}
	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(c.source),
		kgo.ConsumePartitions(assign),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(64<<20),         // our relay's fetch.max.bytes
		kgo.FetchMaxPartitionBytes(8<<20), // and max.partition.fetch.bytes
	)
	if err != nil {
		return 0, 0, err
	}
	defer consumer.Close()
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.target),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // partition preserved
		kgo.RequiredAcks(kgo.AllISRAcks()),             // idempotence is franz-go's default
		kgo.ProducerBatchCompression(c.codec),
		kgo.ProducerLinger(5 * time.Millisecond), // our relay's linger.ms
		kgo.ProducerBatchMaxBytes(1_000_000),     // and batch.size
	}
	if c.txn {
		opts = append(opts, kgo.TransactionalID(c.txnID))
	}
	producer, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, 0, err
	}
	defer producer.Close()

	var (
		mu       sync.Mutex
		firstErr error
	)
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}

	var copied int64
	txns := 0
	records := make([]*kgo.Record, 0, c.batch)
	for left > 0 {
		fetches := consumer.PollRecords(ctx, c.batch)
		if err := fetches.Err(); err != nil {
			return copied, txns, fmt.Errorf("fetch: %w", err)
		}
		records = records[:0]
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			end := ends[p.Topic][p.Partition]
			for _, r := range p.Records {
				if r.Offset >= end {
					break
				}
				records = append(records, &kgo.Record{
					Topic:     outFor[p.Topic],
					Partition: r.Partition,
					Key:       r.Key,
					Value:     r.Value,
					Headers:   r.Headers,
					Timestamp: r.Timestamp,
				})
				if r.Offset+1 == end {
					left--
				}
			}
		})
		if len(records) == 0 {
			continue
		}
		if c.txn {
			if err := producer.BeginTransaction(); err != nil {
				return copied, txns, err
			}
		}
		for _, r := range records {
			producer.Produce(ctx, r, promise)
		}
		copied += int64(len(records))
		if c.txn {
			if err := commit(ctx, producer, failed); err != nil {
				return copied, txns, err
			}
			txns++
		}
	}
	if err := producer.Flush(ctx); err != nil {
		return copied, txns, err
	}
	return copied, txns, failed()
}

// commit flushes the open transaction and commits it, or aborts it if a record failed.
func commit(ctx context.Context, producer *kgo.Client, failed func() error) error {
	if err := producer.Flush(ctx); err != nil {
		return err
	}
	if err := failed(); err != nil {
		return errors.Join(err, producer.EndTransaction(ctx, kgo.TryAbort))
	}
	return producer.EndTransaction(ctx, kgo.TryCommit)
}

// endOffsets returns the high watermark of every partition of topic.
func endOffsets(ctx context.Context, source, topic string) (map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(source))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := listed.Error(); err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	ends := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	if len(ends) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	return ends, nil
}
