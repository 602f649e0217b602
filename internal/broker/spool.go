package broker

import (
	"encoding/binary"
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
	// AddPacked writes n records, the i-th made by record(i, buf): an
	// Event, or nil and the record packed (appended to buf), which
	// UnpackRecord reads back. It returns, for each, whether it holds it,
	// and the generation it was written to. It is done with each record
	// before it asks for the next: they may be one reused Event. A packed
	// record, or an Event without a time, is given now.
	AddPacked(n int, record func(i int, buf []byte) (*audit.Event, []byte), now time.Time) (ok []bool, gen uint64, err error)
	// Sealed notes that n records of generation gen are in the trail.
	Sealed(gen uint64, n int)
}

// spoolState holds the records queued and not yet in the spool.
type spoolState struct {
	mu      sync.Mutex
	pending []*record
	writing bool // a spoolWriter runs

	flush    sync.Mutex // one flush at a time
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
	// A delivery record is packed for the write (packDelivery): it waits
	// for its drain as the few pointers it is, and the drain makes its
	// Event with the time the spool wrote. As canonical JSON, as the
	// trail has it, the write cost twice as much (BenchmarkSpoolDelivery:
	// 1.2-1.5 against 0.7 µs a record), and a fan-out writes one record
	// per container before its values may leave.
	now := time.Now().UTC().Round(0)
	ok, gen, err := b.cfg.Spool.AddPacked(len(rs), func(i int, buf []byte) (*audit.Event, []byte) {
		if r := rs[i]; r.e != nil {
			return r.e, nil
		}
		t := rs[i].text()
		return nil, t.pack(buf)
	}, now)
	for i, r := range rs {
		r.spooled, r.spoolGen = ok[i], gen
		if r.e == nil {
			r.at = now
		}
	}
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

// deliveryPacking is the first byte of a packed delivery record: its
// encoding's version. A server that meets one it does not know (written by
// a newer server) refuses the spool rather than guess.
const deliveryPacking = 1

// pack appends t to buf, packed: deliveryPacking, then agent, action,
// secret, file, container id, name, image, image digest and error, each
// as a uvarint length and its bytes; the version as a uvarint; a byte of
// which pod details are set, and each set one as a string.
func (t *deliveryText) pack(buf []byte) []byte {
	buf = append(buf, deliveryPacking)
	for _, s := range [...]string{t.agent, t.action, t.secret, t.file, t.id, t.name, t.image, t.digest, t.err} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	buf = binary.AppendUvarint(buf, t.version)
	buf = append(buf, t.podSet)
	for i := range podDetails {
		if t.podSet&(1<<i) != 0 {
			buf = binary.AppendUvarint(buf, uint64(len(t.pod[i])))
			buf = append(buf, t.pod[i]...)
		}
	}
	return buf
}

// UnpackRecord reads back a delivery record the broker's spool write
// packed (the server's audit.SpoolOptions.Unpack): the Event the trail
// would have had of it, without its time (the spool's).
func UnpackRecord(p []byte) (audit.Event, error) {
	var t deliveryText
	if len(p) == 0 || p[0] != deliveryPacking {
		return audit.Event{}, errors.New("not a delivery record this server packs (written by a newer one?)")
	}
	p = p[1:]
	str := func() (string, bool) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return "", false
		}
		s := string(p[k : k+int(n)])
		p = p[k+int(n):]
		return s, true
	}
	for _, f := range [...]*string{&t.agent, &t.action, &t.secret, &t.file, &t.id, &t.name, &t.image, &t.digest, &t.err} {
		var ok bool
		if *f, ok = str(); !ok {
			return audit.Event{}, errors.New("a delivery record cut short")
		}
	}
	var k int
	if t.version, k = binary.Uvarint(p); k <= 0 || len(p) == k {
		return audit.Event{}, errors.New("a delivery record cut short")
	}
	t.podSet, p = p[k], p[k+1:]
	if t.podSet>>len(podDetails) != 0 {
		return audit.Event{}, errors.New("a delivery record with pod details this server does not know")
	}
	for i := range podDetails {
		if t.podSet&(1<<i) != 0 {
			var ok bool
			if t.pod[i], ok = str(); !ok {
				return audit.Event{}, errors.New("a delivery record cut short")
			}
		}
	}
	if len(p) != 0 {
		return audit.Event{}, errors.New("a delivery record with more after it")
	}
	if t.agent == "" || t.action == "" {
		return audit.Event{}, errors.New("a delivery record without its agent or action")
	}
	var e audit.Event
	t.fill(&e)
	return e, nil
}
