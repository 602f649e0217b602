package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/internal/audit"
)

type slowAuditor struct {
	mu  sync.Mutex
	got []audit.Event
}

func (a *slowAuditor) Append(_ context.Context, e audit.Event) (audit.Event, error) {
	time.Sleep(time.Millisecond)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, e)
	return e, nil
}

// TestCloseDrainsDeliveryRecords: nothing queued is lost at shutdown, and
// one container's records keep their order.
func TestCloseDrainsDeliveryRecords(t *testing.T) {
	a := &slowAuditor{}
	b := New(Config{Audit: a})
	for i := range 200 {
		b.auditLater(fmt.Sprint("c", i%7), audit.Event{Action: "delivery.apply", Object: fmt.Sprint("c", i%7), Details: map[string]string{"n": fmt.Sprint(i)}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) != 200 || b.AuditPending() != 0 {
		t.Fatalf("%d of 200 records appended, %d pending", len(a.got), b.AuditPending())
	}
	last := map[string]int{}
	for _, e := range a.got {
		var n int
		fmt.Sscan(e.Details["n"], &n)
		if p, ok := last[e.Object]; ok && n < p {
			t.Fatalf("records of %s out of order", e.Object)
		}
		last[e.Object] = n
	}
}

type gateAuditor struct {
	gate chan struct{}
	n    atomic.Int64
}

func (a *gateAuditor) Append(_ context.Context, e audit.Event) (audit.Event, error) {
	<-a.gate
	a.n.Add(1)
	return e, nil
}

// Queuing never blocks (the broker queues under its lock); backpressure
// waits, outside the lock, while a shard is full.
func TestAuditQueueBackpressure(t *testing.T) {
	a := &gateAuditor{gate: make(chan struct{})}
	b := New(Config{Audit: a})
	// The shard's drain holds up to auditDrainBatch records it took
	// from the queue while the auditor blocks.
	for range auditQueueMax + auditDrainBatch + 10 {
		b.queueAudit("c1", audit.Event{Action: "delivery.send"})
	}
	waited := make(chan struct{})
	go func() { b.backpressure(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("backpressure did not wait for a full shard")
	case <-time.After(50 * time.Millisecond):
	}
	close(a.gate)
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("backpressure still waiting after the shard drained")
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := a.n.Load(); n != auditQueueMax+auditDrainBatch+10 {
		t.Fatalf("%d records appended", n)
	}
	if b.aq.full.Load() != 0 {
		t.Fatalf("full shards = %d", b.aq.full.Load())
	}
}

// batchAuditor records the batches AppendAll was given.
type batchAuditor struct {
	slowAuditor
	batches []int
}

func (a *batchAuditor) AppendAll(ctx context.Context, es []audit.Event) []error {
	a.mu.Lock()
	a.batches = append(a.batches, len(es))
	a.mu.Unlock()
	for _, e := range es {
		a.Append(ctx, e)
	}
	return make([]error, len(es))
}

// With an Auditor that appends batches (*audit.Log), a shard's queued
// records go to it together, in order, instead of one wait each.
func TestDeliveryRecordsAppendedInBatches(t *testing.T) {
	a := &batchAuditor{}
	b := New(Config{Audit: a})
	for i := range 300 {
		b.auditLater("c1", audit.Event{Action: "delivery.apply", Object: "c1", Details: map[string]string{"n": fmt.Sprint(i)}})
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) != 300 {
		t.Fatalf("%d of 300 records appended", len(a.got))
	}
	for i, e := range a.got {
		if e.Details["n"] != fmt.Sprint(i) {
			t.Fatalf("record %d is %s: out of order", i, e.Details["n"])
		}
	}
	if len(a.batches) >= 300 || slices.Max(a.batches) > auditDrainBatch {
		t.Fatalf("batches %v: want fewer than one per record, none over %d", a.batches, auditDrainBatch)
	}
}

// FlushAudit returns once the records queued before it are appended, and
// gives up, saying so, when its context ends first.
func TestFlushAudit(t *testing.T) {
	a := &gateAuditor{gate: make(chan struct{})}
	b := New(Config{Audit: a})
	for i := range 50 {
		b.queueAudit(fmt.Sprint("c", i%5), audit.Event{Action: "delivery.apply"})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if err := b.FlushAudit(ctx); err == nil {
		t.Fatal("FlushAudit returned while the auditor was blocked")
	}
	close(a.gate)
	if err := b.FlushAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := a.n.Load(); n != 50 {
		t.Fatalf("FlushAudit returned with %d of 50 records appended", n)
	}
	// Nothing queued: at once.
	if err := b.FlushAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
