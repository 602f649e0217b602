package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Deliveries first. A rotation of a secret bound to thousands of containers
// queues a message on every one of their agents' streams at once; some of
// what follows from each delivery (its audit records, the presence
// published for the other servers) can wait until the fan-out is over, so
// that the messages and the agents' applying get the CPU first.
//
// Delivery records wait (deferred) until every stream has handed its
// messages to the transport and then no delivery has been pushed or
// acknowledged for settleQuiet, but never past deferMax after the oldest of
// them was queued; presence rounds wait for the second only (WaitSettled,
// with their own bound). A machine that is not short of CPU is through a
// rollout's fan-out in tens of milliseconds and barely notices. Measured at
// 10,000 containers over three servers on 2 cores (docs/benchmarks.md
// sections 16 and 18): delivery records that waited only for the streams to
// drain still ran beside the agents' applying, and cost the rotation's p99
// a fifth. A bound of 1 s instead of 250 ms measured no better, if anything
// worse, on a slower host where the fan-out outlasts 250 ms (section 18).
//
// The bound counts from when a record was queued, not from when its drain
// began to wait: a trail that keeps being fed (a fleet that is never quiet)
// is appended to without pause once its records are deferMax old, instead
// of waiting deferMax again for each batch. The records wait in the spool
// (spool.go), so a kill meanwhile loses none of them; what the bound
// delays is only their appearance in the trail (an incident report flushes
// them first: FlushAudit).
//
// deferMax bounds how long a delivery record waits for the fan-out, from
// when it was queued.
const deferMax = 250 * time.Millisecond

// settleQuiet is how long without pushes or acknowledgements counts as
// settled.
const settleQuiet = 50 * time.Millisecond

// sending counts the sessions with messages queued or being sent.
type sending struct {
	mu    sync.Mutex
	n     int
	quiet chan struct{} // closed while n == 0
}

func (o *sending) init() {
	o.quiet = make(chan struct{})
	close(o.quiet)
}

// add notes that a session has something to send. A nil sending (a
// session made alone, in tests) counts nothing.
func (o *sending) add() {
	if o == nil {
		return
	}
	o.mu.Lock()
	if o.n == 0 {
		o.quiet = make(chan struct{})
	}
	o.n++
	o.mu.Unlock()
}

// done notes that a session has sent everything (or closed).
func (o *sending) done() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.n--
	if o.n == 0 {
		close(o.quiet)
	}
	o.mu.Unlock()
}

// wait returns once no session has anything to send, or after max.
func (o *sending) wait(max time.Duration) {
	o.mu.Lock()
	q, n := o.quiet, o.n
	o.mu.Unlock()
	if n == 0 {
		return
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-q:
	case <-t.C:
	}
}

// activity is when the last delivery was pushed or acknowledged, and until
// when acknowledgements asked to be held back (ackHoldFor) are expected.
type activity struct {
	last atomic.Int64 // unix nanoseconds
	held atomic.Int64 // unix nanoseconds
}

// touch notes a push or an acknowledgement.
func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

// expect notes that acknowledgements are held back until d from now: the
// fan-out is not settled before they come.
func (a *activity) expect(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := a.held.Load()
		if cur >= until || a.held.CompareAndSwap(cur, until) {
			return
		}
	}
}

// waitQuiet returns once nothing was pushed or acknowledged for
// settleQuiet, and no acknowledgement is held back any more, or at
// deadline.
func (a *activity) waitQuiet(deadline time.Time) {
	for {
		now := time.Now()
		next := time.Unix(0, a.last.Load()).Add(settleQuiet)
		if held := time.Unix(0, a.held.Load()); held.After(next) {
			next = held
		}
		if !now.Before(next) || !now.Before(deadline) {
			return
		}
		if deadline.Before(next) {
			next = deadline
		}
		time.Sleep(next.Sub(now))
	}
}

// WaitSettled returns once no delivery has been pushed or acknowledged for
// settleQuiet, or after max: the server's presence rounds call it first,
// so that a rollout is published once its acknowledgements are in (one
// write per agent with the final state, after the fan-out) rather than
// while they come (a write with the state pending, then another).
func (b *Broker) WaitSettled(max time.Duration) { b.active.waitQuiet(time.Now().Add(max)) }

// deferred waits, until deadline at most, until the fan-out under way is
// over: every stream has handed its messages to the transport, and then no
// delivery has been pushed or acknowledged for settleQuiet (the agents are
// done applying). Delivery records wait for it, with deadline deferMax
// after the oldest of them was queued.
func (b *Broker) deferred(deadline time.Time) {
	left := time.Until(deadline)
	if left <= 0 {
		return
	}
	b.sending.wait(left)
	b.active.waitQuiet(deadline)
}
