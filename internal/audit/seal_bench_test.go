package audit

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deliveryEvent is a record as the broker and the agent API append them in
// a fan-out rotation (delivery.send, delivery.rotate): the usual record of
// a busy server.
func deliveryEvent() Event {
	return Event{
		Time:   time.Date(2026, 12, 1, 16, 38, 8, 319078259, time.UTC),
		Actor:  "agent:bench-agent-0376",
		Action: "delivery.rotate",
		Object: "secret:bench/shared",
		Result: ResultOK,
		Details: map[string]string{
			"agent":        "bench-agent-0376",
			"container":    "bench-3763",
			"container_id": "ctr-00003763",
			"file":         "shared",
			"image":        "registry.example.com/bench/app:1.0",
			"image_digest": "sha256:" + strings.Repeat("ab", 32),
			"secret":       "bench/shared",
			"version":      "4",
		},
		Server: "819582eeb2eae05e",
	}
}

var benchHead = Head{Seq: 33298, Hash: strings.Repeat("fa55", 16)}

// BenchmarkCanonical encodes one delivery record's body into a reused
// buffer, as the committer does.
func BenchmarkCanonical(b *testing.B) {
	e := deliveryEvent()
	e.Seq, e.Prev = benchHead.Seq+1, benchHead.Hash
	var (
		buf  []byte
		keys []detail
	)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = appendCanonical(buf[:0], &e, &keys); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalJSON is BenchmarkCanonical by json.Marshal, as the
// canonical encoding was written before appendCanonical.
func BenchmarkCanonicalJSON(b *testing.B) {
	e := deliveryEvent()
	e.Seq, e.Prev = benchHead.Seq+1, benchHead.Hash
	b.ReportAllocs()
	for b.Loop() {
		if _, err := appendCanonicalJSON(nil, &e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealRecord seals one delivery record with a MAC, as the
// committer does for each record of a group: encoding, chain hash, MAC and
// line, into the buffer of the group.
func BenchmarkSealRecord(b *testing.B) {
	key := bytes.Repeat([]byte{7}, KeySize)
	e := deliveryEvent()
	s := &sealer{key: key}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = s.seal(buf[:0], &e, benchHead); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepare is Append's check and copy of one delivery record.
func BenchmarkPrepare(b *testing.B) {
	e := deliveryEvent()
	now := time.Now
	b.ReportAllocs()
	for b.Loop() {
		if _, err := prepare(e, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendCPU appends delivery records from 64 goroutines per core
// to an anchored Log whose file writes and fsyncs cost nothing: the CPU of
// the audit path per record (prepare, queueing, group sealing, the Anchor's
// Mark per group, waking the callers), without the disk.
func BenchmarkAppendCPU(b *testing.B) {
	l := diskless(b)
	ctx := context.Background()
	e := deliveryEvent()
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(ctx, e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b)
}

// BenchmarkAppendAllCPU is BenchmarkAppendCPU for the broker's path:
// batches of 128 delivery records, each with the Details map made for it,
// handed to AppendAll from 8 goroutines per core. CPU per record.
func BenchmarkAppendAllCPU(b *testing.B) {
	l := diskless(b)
	ctx := context.Background()
	const batch = 128
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		es := make([]Event, 0, batch)
		flush := func() {
			for _, err := range l.AppendAll(ctx, es) {
				if err != nil {
					b.Error(err)
				}
			}
			es = es[:0]
		}
		for pb.Next() {
			es = append(es, deliveryEvent())
			if len(es) == batch {
				flush()
			}
		}
		if len(es) > 0 {
			flush()
		}
	})
	reportRate(b)
}

// diskless opens an anchored Log whose file writes and fsyncs cost
// nothing.
func diskless(b *testing.B) *Log {
	l, err := Open(filepath.Join(b.TempDir(), "audit.log"), Options{Anchor: &memAnchor{}, Server: "819582eeb2eae05e"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	l.write = func(p []byte) (int, error) { return len(p), nil }
	l.sync = func() error { return nil }
	return l
}
