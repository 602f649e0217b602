package broker

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"coffer/internal/audit"
)

// Delivery records are appended to the audit trail after the fact, in
// batches, once a fan-out has settled (auditq.go, outbound.go): a server
// killed meanwhile would lose those still queued, among them the
// delivery.send of a value that has already left. With a Spool (the
// server's audit.Spool) every queued record is written to the spool's
// file first, where a killed process leaves it and the next start appends
// it to the trail:
//
//   - a session's sender writes the spool before it hands messages to the
//     transport, so no value leaves before its delivery.send is there;
//   - a writer goroutine, started when a record is queued and running
//     while any waits, writes it moments after (an acknowledgement's
//     record is there while the drains still wait for the fan-out);
//   - one write covers every record queued meanwhile (one flush at a time,
//     the others waiting for it: what they need is in its write), and a
//     drain flushes too before it reads what the flush set.
//
// The spool is told which records reached the trail and empties itself
// once all have.

// Spool is where queued records are kept until they are in the trail;
// *audit.Spool implements it.
type Spool interface {
	// AddFunc writes n records, the i-th made by event(i), and returns,
	// for each, whether it holds it, and the generation it was written
	// to. It is done with each Event before it asks for the next: they
	// may be one reused Event. A record without a time is given now.
	AddFunc(n int, event func(i int) *audit.Event, now time.Time) (ok []bool, gen uint64, err error)
	// Sealed notes that n records of generation gen are in the trail.
	Sealed(gen uint64, n int)
}

// spoolState holds the records queued and not yet in the spool.
type spoolState struct {
	mu      sync.Mutex
	pending []*record
	writing bool // a spoolWriter runs

	flush    sync.Mutex  // one flush at a time
	scratch  audit.Event // the Event each delivery record is made into for the write, under flush
	failures atomic.Int64
}

// toSpool notes r for the next flush. It never blocks (safe under b.mu).
func (b *Broker) toSpool(r *record) {
	if b.cfg.Spool == nil {
		return
	}
	b.sp.mu.Lock()
	b.sp.pending = append(b.sp.pending, r)
	start := !b.sp.writing
	b.sp.writing = true
	b.sp.mu.Unlock()
	if start {
		go b.spoolWriter()
	}
}

// spoolWriter flushes until nothing is pending, so that a record reaches
// the spool moments after it was queued even when no sender or drain
// flushes (an acknowledgement's record while the drains wait for the
// fan-out). It runs only while there is something to write.
func (b *Broker) spoolWriter() {
	for {
		b.spoolFlush()
		b.sp.mu.Lock()
		if len(b.sp.pending) == 0 {
			b.sp.writing = false
			b.sp.mu.Unlock()
			return
		}
		b.sp.mu.Unlock()
	}
}

// spoolFlush writes every record queued so far to the spool, and returns
// once they are written (or the write failed), whoever wrote them. Callers
// must not hold b.mu.
func (b *Broker) spoolFlush() {
	if b.cfg.Spool == nil {
		return
	}
	b.sp.flush.Lock()
	defer b.sp.flush.Unlock()
	b.sp.mu.Lock()
	rs := b.sp.pending
	b.sp.pending = nil
	b.sp.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	// A delivery record's Event is made for the write into one Event
	// and Details map, reused: the record waits for its drain as the few
	// pointers it is, and the drain makes it again with the time the
	// spool wrote. A map made for each record (BenchmarkSpoolDelivery) was
	// half the write's allocations, all of them garbage at once.
	now := time.Now().UTC().Round(0)
	scratch := &b.sp.scratch
	ok, gen, err := b.cfg.Spool.AddFunc(len(rs), func(i int) *audit.Event {
		if r := rs[i]; r.e != nil {
			return r.e
		}
		rs[i].fillEvent(scratch)
		scratch.Time = now
		return scratch
	}, now)
	for i, r := range rs {
		r.spooled, r.spoolGen = ok[i], gen
		if r.e == nil {
			r.at = now
		}
	}
	// The strings go with their records.
	clear(scratch.Details)
	if err != nil && b.sp.failures.Add(1)%1000 == 1 { // the first, then one in a thousand
		b.log.Error("audit spool: records not kept against a kill (they are still appended to the trail)", "records", len(rs), "err", err)
	}
}

// spoolSealed tells the spool how many of rs, whose appends returned errs,
// it held and are now in the trail.
func (b *Broker) spoolSealed(rs []*record, errs []error) {
	if b.cfg.Spool == nil {
		return
	}
	var gens []uint64
	var ns []int
	for i, r := range rs {
		// A record the trail refuses as invalid will never be in it: it
		// must not keep the spool from emptying either.
		if !r.spooled || errs[i] != nil && !errors.Is(errs[i], audit.ErrInvalidEvent) {
			continue
		}
		j := slices.Index(gens, r.spoolGen)
		if j < 0 {
			gens, ns = append(gens, r.spoolGen), append(ns, 0)
			j = len(gens) - 1
		}
		ns[j]++
	}
	for j, g := range gens {
		b.cfg.Spool.Sealed(g, ns[j])
	}
}
