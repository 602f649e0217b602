package broker

import (
	"strconv"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
)

// A session counts as sending from its first queued message until what it
// took is handed over with nothing queued meanwhile, or until it closes;
// wait returns at once when none is sending, when the last one is done,
// and after its bound otherwise.
func TestOutboundCountsSendingSessions(t *testing.T) {
	var o sending
	o.init()
	n := func() int { o.mu.Lock(); defer o.mu.Unlock(); return o.n }
	waited := func(max time.Duration) time.Duration { return timed(func() { o.wait(max) }) }
	if d := waited(time.Hour); d > time.Second {
		t.Fatalf("wait with nothing to send took %v", d)
	}

	a := newSession("a", func() {}, true, cofferv1.DefaultMaxRecv, &o)
	b := newSession("b", func() {}, true, cofferv1.DefaultMaxRecv, &o)
	a.enqueue(nil, &cofferv1.Desired{ContainerId: "c1"})
	a.enqueue(nil, &cofferv1.Desired{ContainerId: "c2"})
	b.enqueue(nil, &cofferv1.Desired{ContainerId: "c3"})
	if n() != 2 {
		t.Fatalf("%d sessions sending, want 2", n())
	}
	if d := waited(50 * time.Millisecond); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("wait while sending returned after %v, want its bound of 50ms", d)
	}

	a.take()
	a.enqueue(nil, &cofferv1.Desired{ContainerId: "c1"}) // queued while the take is being sent
	a.sent()
	if n() != 2 {
		t.Fatalf("after a send with more queued meanwhile: %d sessions sending, want 2", n())
	}
	a.take()
	a.sent()
	if n() != 1 {
		t.Fatalf("after a's last send: %d sessions sending, want 1", n())
	}

	done := make(chan time.Duration)
	go func() { done <- waited(time.Hour) }()
	time.Sleep(20 * time.Millisecond)
	b.close() // its stream ended with c3 unsent
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return when the last sending session closed")
	}
	b.enqueue(nil, &cofferv1.Desired{ContainerId: "c4"}) // a closed session counts no more
	if n() != 0 {
		t.Fatalf("%d sessions sending after all were sent or closed, want 0", n())
	}
}

// WaitSettled returns at once when nothing was pushed or acknowledged
// lately, settleQuiet after the last such event otherwise, and after its
// bound when they keep coming.
func TestWaitSettled(t *testing.T) {
	b := New(Config{})
	took := func(max time.Duration) time.Duration { return timed(func() { b.WaitSettled(max) }) }
	if d := took(time.Hour); d > time.Second {
		t.Fatalf("WaitSettled with nothing going on took %v", d)
	}
	b.active.touch()
	if d := took(time.Hour); d < settleQuiet/2 || d > 5*time.Second {
		t.Fatalf("WaitSettled right after a push took %v, want about %v", d, settleQuiet)
	}
	b.active.touch()
	defer keepActive(b)()
	if d := took(300 * time.Millisecond); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("WaitSettled while pushes keep coming took %v, want its bound of 300ms", d)
	}
}

// Delivery records wait until the streams have sent what they had and
// then until the acknowledgements stop coming, and never past deferMax
// after they were queued.
func TestDeferredWaitsForTheFanout(t *testing.T) {
	b := New(Config{})
	took := func() time.Duration {
		return timed(func() { b.deferred(time.Now().Add(deferMax)) })
	}
	if d := took(); d > deferMax/2 {
		t.Fatalf("deferred with nothing going on took %v", d)
	}

	// A stream with something queued: deferred waits until it is sent,
	// then settleQuiet after the last acknowledgement.
	s := newSession("a", func() {}, true, cofferv1.DefaultMaxRecv, &b.sending)
	s.enqueue(nil, &cofferv1.Desired{ContainerId: "c1"})
	b.active.touch()
	const drain = deferMax / 4
	go func() {
		time.Sleep(drain)
		// An acknowledgement comes in as the stream drains. Noted
		// before the drain: noted after it, deferred could wake on the
		// drain first and see only the push at the start, more than
		// settleQuiet before (a CI flake).
		b.active.touch()
		s.take()
		s.sent()
	}()
	if d := took(); d < drain+settleQuiet*4/5 || d > 5*time.Second {
		t.Fatalf("deferred during a fan-out took %v, want about %v", d, drain+settleQuiet)
	}

	// A stream that never drains and acknowledgements that keep coming
	// delay it until its deadline, not more.
	s.enqueue(nil, &cofferv1.Desired{ContainerId: "c2"})
	defer keepActive(b)()
	if d := took(); d < deferMax*4/5 || d > 5*time.Second {
		t.Fatalf("deferred while the fan-out never ends took %v, want its bound %v", d, deferMax)
	}
	// Records queued a while ago wait only for what is left of their
	// bound, and those already deferMax old not at all: a trail that
	// keeps being fed is not held deferMax again for each batch.
	if d := timed(func() { b.deferred(time.Now().Add(drain)) }); d < drain*4/5 || d >= deferMax*4/5 {
		t.Fatalf("deferred with %v left of its bound took %v, want about that", drain, d)
	}
	if d := timed(func() { b.deferred(time.Now().Add(-time.Millisecond)) }); d > settleQuiet {
		t.Fatalf("deferred past its bound took %v, want no wait", d)
	}
}

// A drain waits for the fan-out from when its oldest record was queued:
// while the fleet stays busy, records older than deferMax are appended
// at once, batch after batch.
func TestBusyFleetDoesNotHoldEachBatch(t *testing.T) {
	l := &recAuditor{}
	b := New(Config{Audit: l})
	n := func() int { return len(l.find("delivery.apply", nil)) }
	b.active.touch()
	defer keepActive(b)() // never quiet
	start := time.Now()
	// More records on one key than one drain batch appends: the second
	// batch was queued with the first, so it is past its bound too.
	for i := range 3 * auditDrainBatch {
		b.auditLater("c1", audit.Event{Actor: "agent:a", Action: "delivery.apply", Result: "ok", Details: map[string]string{"n": strconv.Itoa(i)}})
	}
	for n() < 3*auditDrainBatch {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%d of %d records appended after 10s", n(), 3*auditDrainBatch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(start); d < deferMax*4/5 || d > 2*deferMax {
		t.Fatalf("3 batches queued at once took %v while the fleet was busy, want one bound (%v)", d, deferMax)
	}
}

// An acknowledgement repeated for a generation already acknowledged
// changes nothing: no record, no latency observed again, and it does not
// count as activity, so an agent repeating its acknowledgements cannot
// hold the server's delivery records at their bound.
func TestRepeatedAcknowledgementIsNotActivity(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	gen := a.generation("c1")
	a.ack("c1", gen)
	r.waitHolder("app/db", "c1", func(h Holder) bool { return !h.Pending })
	r.waitAudit("delivery.apply", 1, nil)
	last := r.b.active.last.Load()

	for range 50 {
		a.ack("c1", gen)
	}
	// The stream reads in order: once this is in, so are the repeats.
	ackProcessOnly(a, "c1", gen, proc("db", "app/db", 1, false))
	r.waitHolder("app/db", "c1", func(h Holder) bool { return h.Process != nil })
	if now := r.b.active.last.Load(); now != last {
		t.Fatalf("repeated acknowledgements counted as activity (%v later)", time.Duration(now-last))
	}
	if err := r.b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.aud.find("delivery.apply", nil)); n != 1 {
		t.Fatalf("%d delivery.apply records after repeated acknowledgements, want 1", n)
	}
}

// keepActive notes a push on b every settleQuiet/5 until the returned
// function is called.
func keepActive(b *Broker) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(settleQuiet / 5):
				b.active.touch()
			}
		}
	}()
	return func() { close(done) }
}

// timed is how long f took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}
