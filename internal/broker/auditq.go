package broker

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
)

// Delivery records are appended off the agents' streams: a stream's receive
// loop hands them to a queue and goes on reading, instead of waiting for the
// audit trail's fsync once per acknowledgement. A rollout to thousands of
// containers then costs a few group commits, and the transport's receive
// buffers are handed back at once instead of piling up behind the disk
// (which, with 1,000 agents, cost over 100 MB of server memory).
//
// Records are sharded by key (a container id, or an agent for its
// anomalies), so those of one key keep their order; the shards drain
// concurrently, so they share group commits. A shard drains on a goroutine
// that exists only while it has records.
//
// Queuing never blocks and never does I/O, so the broker queues records
// while it holds its lock: a delivery.send record is queued before the
// message it describes can reach the stream. Bounding the queue is left to
// the caller, once it has let go of its locks: backpressure waits while a
// shard holds auditQueueMax records or more (beside the auditDrainBatch
// its drain is appending), which slows that stream (or that API call) down
// rather than let the queue grow without bound.

const (
	auditShards     = 64
	auditQueueMax   = 4096
	auditDrainBatch = 128 // records a shard appends at once
)

// record is a queued audit record: a ready Event, or a delivery record
// kept as pointers to what the broker holds anyway (the container's report,
// the file reference) and made into an Event only when it is appended. A
// rollout to 10,000 containers queues 10,000 delivery.send records and
// then 10,000 acknowledgement records faster than the trail commits them:
// about 80 bytes each instead of an Event with its own details map (about
// a kilobyte).
type record struct {
	e *audit.Event
	d delivery
	// spooled: the spool holds it, in generation spoolGen (spool.go);
	// set by the spool's flush, which the drain waits for before it
	// reads them.
	spooled  bool
	spoolGen uint64
	at       time.Time // a delivery record's time, as the spool wrote it
	queued   int64     // when it was queued, unix nanoseconds: its drain waits until deferMax after
}

// delivery is a delivery record (see fillDeliveryEvent).
type delivery struct {
	agent, action string
	info          *cofferv1.Container
	f             *cofferv1.FileRef
	err           string // a failed delivery: result "error" with this reason
}

func (r *record) event() audit.Event {
	if r.e != nil {
		return *r.e
	}
	var e audit.Event
	r.fillEvent(&e)
	return e
}

// fillEvent makes a delivery record into e, reusing its Details map.
func (r *record) fillEvent(e *audit.Event) {
	t := r.text()
	t.fill(e)
	e.Time = r.at // when it was spooled (zero: the trail's time)
}

// text is what a delivery record says.
func (r *record) text() deliveryText {
	t := textOf(r.d.agent, r.d.info, r.d.action, r.d.f)
	t.err = r.d.err
	return t
}

type auditShard struct {
	mu       sync.Mutex
	below    sync.Cond // signalled as q shrinks under auditQueueMax
	appended sync.Cond // signalled as done grows
	q        []*record
	busy     bool
	// queued counts the records ever queued on the shard, done those
	// appended: the drain takes them in order, so every record queued
	// before queued reached n is in the trail once done reaches n.
	queued, done uint64
}

type auditQueue struct {
	seed   maphash.Seed
	shards [auditShards]auditShard
	active atomic.Int64 // running drain goroutines
	full   atomic.Int64 // shards holding auditQueueMax records or more
}

func (q *auditQueue) init() {
	q.seed = maphash.MakeSeed()
	for i := range q.shards {
		q.shards[i].below.L = &q.shards[i].mu
		q.shards[i].appended.L = &q.shards[i].mu
	}
}

// auditLater appends e after the records queued before it for the same key,
// without waiting for it to be durable (but waiting for room in the queue).
// Callers must not hold b.mu.
func (b *Broker) auditLater(key string, e audit.Event) {
	b.queueAudit(key, e)
	b.backpressure()
}

// deliveryLater is auditLater for a delivery record.
func (b *Broker) deliveryLater(key string, d delivery) {
	b.queueDelivery(key, d)
	b.backpressure()
}

// queueAudit queues e under key; it never blocks (safe under b.mu).
func (b *Broker) queueAudit(key string, e audit.Event) {
	b.queue(key, &record{e: &e})
}

// queueDelivery queues a delivery record under key; it never blocks (safe
// under b.mu).
func (b *Broker) queueDelivery(key string, d delivery) {
	deliveries.WithLabelValues(d.action).Inc()
	b.queue(key, &record{d: d})
}

func (b *Broker) queue(key string, r *record) {
	if b.cfg.Audit == nil {
		return
	}
	r.queued = time.Now().UnixNano()
	b.toSpool(r)
	s := &b.aq.shards[maphash.String(b.aq.seed, key)%auditShards]
	s.mu.Lock()
	s.q = append(s.q, r)
	s.queued++
	if len(s.q) == auditQueueMax {
		b.aq.full.Add(1)
	}
	start := !s.busy
	s.busy = true
	s.mu.Unlock()
	if start {
		b.aq.active.Add(1)
		go func() {
			defer b.aq.active.Add(-1)
			b.drainAudit(s)
		}()
	}
}

// backpressure waits until no shard is full. It costs one atomic load when
// none is. Callers must not hold b.mu.
func (b *Broker) backpressure() {
	if b.aq.full.Load() == 0 {
		return
	}
	for i := range b.aq.shards {
		s := &b.aq.shards[i]
		s.mu.Lock()
		for len(s.q) >= auditQueueMax {
			s.below.Wait()
		}
		s.mu.Unlock()
	}
}

func (b *Broker) drainAudit(s *auditShard) {
	var rs []*record
	var es []audit.Event
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.q = nil
			s.busy = false
			s.mu.Unlock()
			return
		}
		// Up to auditDrainBatch records at once, in their order: they
		// share group commits instead of waiting for one each.
		n := min(len(s.q), auditDrainBatch)
		rs = append(rs[:0], s.q[:n]...)
		clear(s.q[:n])
		s.q = s.q[n:]
		if len(s.q) < auditQueueMax && len(s.q)+n >= auditQueueMax {
			b.aq.full.Add(-1)
			s.below.Broadcast()
		}
		s.mu.Unlock()
		b.spoolFlush() // in the spool before the wait (spool.go)
		// Deliveries first (outbound.go), until deferMax after the
		// oldest record of the batch, rs[0], was queued.
		b.deferred(time.Unix(0, rs[0].queued).Add(deferMax))
		es = es[:0]
		for _, r := range rs {
			es = append(es, r.event())
		}
		errs := b.auditAll(es)
		b.spoolSealed(rs, errs)
		clear(rs)
		s.mu.Lock()
		s.done += uint64(n)
		s.appended.Broadcast()
		s.mu.Unlock()
	}
}

// FlushAudit waits until every delivery record queued before the call is
// in the audit trail (appended, or failed and logged), or ctx ends. An
// incident report asks it first, so that a delivery acknowledged a moment
// ago is in the chain of custody it reads.
func (b *Broker) FlushAudit(ctx context.Context) error {
	var target [auditShards]uint64
	for i := range b.aq.shards {
		s := &b.aq.shards[i]
		s.mu.Lock()
		target[i] = s.queued
		s.mu.Unlock()
	}
	for i := range b.aq.shards {
		s := &b.aq.shards[i]
		stop := context.AfterFunc(ctx, func() {
			s.mu.Lock()
			s.appended.Broadcast()
			s.mu.Unlock()
		})
		s.mu.Lock()
		for s.done < target[i] && ctx.Err() == nil {
			s.appended.Wait()
		}
		left := target[i] - min(s.done, target[i])
		s.mu.Unlock()
		stop()
		if left > 0 {
			return fmt.Errorf("%d delivery records not yet audited: %w", left, ctx.Err())
		}
	}
	return nil
}

// BatchAuditor is an Auditor that can append several records in one
// wait (*audit.Log); the broker uses it when its Auditor has it. It may
// keep the records' Details maps: the broker's are made for it.
type BatchAuditor interface {
	AppendAll(ctx context.Context, es []audit.Event) []error
}

// auditAll appends es in order and logs the records that failed.
func (b *Broker) auditAll(es []audit.Event) []error {
	if b.cfg.Audit == nil {
		return make([]error, len(es))
	}
	ba, ok := b.cfg.Audit.(BatchAuditor)
	if !ok {
		errs := make([]error, len(es))
		for i, e := range es {
			errs[i] = b.audit(context.Background(), e)
		}
		return errs
	}
	errs := ba.AppendAll(context.Background(), es)
	for i, err := range errs {
		if err != nil {
			b.log.Error("audit append failed", "action", es[i].Action, "err", err)
		}
	}
	return errs
}

// AuditPending reports how many delivery records wait to be appended.
func (b *Broker) AuditPending() int {
	n := 0
	for i := range b.aq.shards {
		s := &b.aq.shards[i]
		s.mu.Lock()
		n += len(s.q)
		s.mu.Unlock()
	}
	return n
}

// Close waits until every queued delivery record is in the audit trail, or
// ctx ends. Call it after the agents' streams are closed and before the
// audit trail is.
func (b *Broker) Close(ctx context.Context) error {
	// Polled rather than a WaitGroup: a stream closing meanwhile may still
	// queue its last acknowledgements.
	for b.aq.active.Load() > 0 || b.AuditPending() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d delivery records not audited: %w", b.AuditPending(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

var _ BatchAuditor = (*audit.Log)(nil)
