package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Deliveries first. A rotation of a secret bound to thousands of containers
// queues a message on every one of their agents' streams at once; some of
// what follows from each delivery (its audit records, the presence
// published for the other servers) can wait until the messages are out.
// While any stream has something queued and not yet handed to the
// transport, that work waits for the streams to drain, up to deferMax, so
// that the fan-out gets the CPU first; a machine that is not short of CPU
// drains in a few milliseconds and barely notices.
//
// Nothing waits longer than deferMax, whatever the streams do (a stream
// that keeps being fed delays nothing by more than that), and nothing that
// delivers or removes a file waits at all: container reports and their
// pushes, revocations and stream closes go on as before. Acknowledgements
// do not wait either: one read after a later push would be stale (its
// generation no longer the container's) and the state it reports lost.

// deferMax bounds how long deferred work waits for the streams to drain.
const deferMax = 100 * time.Millisecond

// outbound counts the sessions with messages queued or being sent.
type outbound struct {
	mu    sync.Mutex
	n     int
	quiet chan struct{} // closed while n == 0

	active atomic.Int64 // unix nanoseconds of the last push or acknowledgement
}

func (o *outbound) init() {
	o.quiet = make(chan struct{})
	close(o.quiet)
}

// add notes that a session has something to send. A nil outbound (a
// session made alone, in tests) counts nothing.
func (o *outbound) add() {
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
func (o *outbound) done() {
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
func (o *outbound) wait(max time.Duration) {
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

// WaitSettled returns once no delivery has been pushed or acknowledged for
// settleQuiet, or after max: the server's presence rounds call it first,
// so that a rollout is published once its acknowledgements are in (one
// write per agent with the final state, after the fan-out) rather than
// while they come (a write with the state pending, then another).
func (b *Broker) WaitSettled(max time.Duration) {
	deadline := time.Now().Add(max)
	for {
		last := time.Unix(0, b.out.active.Load())
		now := time.Now()
		next := last.Add(settleQuiet)
		if !now.Before(next) || !now.Before(deadline) {
			return
		}
		if deadline.Before(next) {
			next = deadline
		}
		time.Sleep(next.Sub(now))
	}
}

// settleQuiet is how long without pushes or acknowledgements counts as
// settled (WaitSettled).
const settleQuiet = 50 * time.Millisecond

// touch notes a push or an acknowledgement, for WaitSettled.
func (o *outbound) touch() { o.active.Store(time.Now().UnixNano()) }
