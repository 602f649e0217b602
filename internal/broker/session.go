package broker

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cofferv1 "coffer/api/coffer/v1"
)

// session is one agent's open Sync stream: an outbox that coalesces Desired
// messages per container (only the newest matters) and a sender goroutine.
// Every batch carries the values its Desired messages refer to, once each,
// so the agent never depends on a value it may have dropped. No message is
// larger than the agent's receive limit.
type session struct {
	agent   string
	cancel  context.CancelFunc
	batch   bool // the agent understands Batch
	maxRecv int  // the largest message the agent receives, bytes

	out *sending // the broker's count of sessions with something to send (outbound.go)
	// spool, if set, writes the records queued so far to the broker's
	// spool; called before each message leaves (spool.go).
	spool func()

	mu      sync.Mutex
	values  map[verKey]*cofferv1.SecretValue
	desired map[string]*cofferv1.Desired
	order   []string
	wake    chan struct{}
	pending bool // counted in out: something queued or being sent
	closed  bool
	// ackHold is how long the agent is asked to hold back its
	// acknowledgements of the next batch (ackHoldFor).
	ackHold time.Duration
}

func newSession(agent string, cancel context.CancelFunc, batch bool, maxRecv int, out *sending) *session {
	return &session{agent: agent, cancel: cancel, batch: batch, maxRecv: maxRecv, out: out,
		values: map[verKey]*cofferv1.SecretValue{}, desired: map[string]*cofferv1.Desired{}, wake: make(chan struct{}, 1)}
}

// enqueue puts d and the values it needs in the outbox; the sender sends
// them once notified.
func (s *session) enqueue(vals []*cofferv1.SecretValue, d *cofferv1.Desired) {
	s.mu.Lock()
	for _, v := range vals {
		s.values[verKey{v.Secret, v.Version}] = v
	}
	if _, ok := s.desired[d.ContainerId]; !ok {
		s.order = append(s.order, d.ContainerId)
	}
	s.desired[d.ContainerId] = d
	if !s.pending && !s.closed {
		s.pending = true
		s.out.add()
	}
	s.mu.Unlock()
}

// sent notes that what take returned has been handed to the transport:
// the session no longer counts as sending unless more was queued meanwhile.
func (s *session) sent() {
	s.mu.Lock()
	if s.pending && len(s.order) == 0 && len(s.values) == 0 {
		s.pending = false
		s.out.done()
	}
	s.mu.Unlock()
}

// close ends the session's count as sending: its stream is gone.
func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	if s.pending {
		s.pending = false
		s.out.done()
	}
	s.mu.Unlock()
}

// holdAcks asks the agent to hold back its acknowledgements of what is
// queued, for up to d (the longest asked for since the last send wins).
// Only an agent that understands Batch is asked.
func (s *session) holdAcks(d time.Duration) {
	if !s.batch {
		return
	}
	s.mu.Lock()
	s.ackHold = max(s.ackHold, d)
	s.mu.Unlock()
}

// notify wakes the sender; it never blocks.
func (s *session) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take empties the outbox, with the hold on acknowledgements asked for it.
func (s *session) take() ([]*cofferv1.SecretValue, []*cofferv1.Desired, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hold := s.ackHold
	s.ackHold = 0
	vals := make([]*cofferv1.SecretValue, 0, len(s.values))
	for _, v := range s.values {
		vals = append(vals, v)
	}
	clear(s.values)
	ds := make([]*cofferv1.Desired, 0, len(s.order))
	for _, id := range s.order {
		ds = append(ds, s.desired[id])
	}
	s.order = nil
	clear(s.desired)
	return vals, ds, hold
}

// run sends queued messages until ctx ends or a send fails.
func (s *session) run(ctx context.Context, send func(*cofferv1.ServerMessage) error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
		ms := s.messages(s.take())
		if s.spool != nil && len(ms) > 0 {
			s.spool() // each delivery.send is in the spool before its value leaves
		}
		for _, m := range ms {
			if err := send(m); err != nil {
				return err
			}
		}
		s.sent()
	}
}

const (
	// chunkBytes caps the values carried by one message (a single larger
	// value goes alone), and so the memory one message holds up.
	chunkBytes = 1 << 20
	// batchDesired caps the Desired messages in one Batch.
	batchDesired = 256
	// framing is room kept in each message for what encoding sizes do not
	// count: the message's own tags and lengths.
	framing = 1 << 10
	// valueRoom is room kept beside a value for its name, version and the
	// framing around it.
	valueRoom = 16 << 10
)

// fits reports whether a value of n bytes of secret name can be sent to
// the agent in a message it accepts.
func (s *session) fits(name string, n int) bool { return n+len(name)+valueRoom <= s.maxRecv }

// entry is the encoded size of an embedded message of n bytes: tag, length
// and body.
func entry(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

// messages turns one outbox flush into messages: values first, in chunks
// of at most chunkBytes, then the Desired states; no message is larger
// than the agent's receive limit. An agent that understands Batch gets them
// in as few messages as the caps allow (each message is one write and flush
// on the stream: one per container made fan-out to thousands of containers
// cost a syscall per container); others get one Values message per chunk
// and one Desired per container.
func (s *session) messages(vals []*cofferv1.SecretValue, ds []*cofferv1.Desired, ackHold time.Duration) []*cofferv1.ServerMessage {
	budget := s.maxRecv - framing
	chunkCap := min(chunkBytes, budget)
	var chunks [][]*cofferv1.SecretValue
	var sizes []int
	var cur []*cofferv1.SecretValue
	size := 0
	for _, v := range vals {
		n := entry(proto.Size(v))
		if len(cur) > 0 && size+n > chunkCap {
			chunks, sizes, cur, size = append(chunks, cur), append(sizes, size), nil, 0
		}
		cur, size = append(cur, v), size+n
	}
	if len(cur) > 0 {
		chunks, sizes = append(chunks, cur), append(sizes, size)
	}
	var out []*cofferv1.ServerMessage
	if !s.batch {
		for _, c := range chunks {
			out = append(out, &cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Values{Values: &cofferv1.Values{Values: c}}})
		}
		for _, d := range ds {
			out = append(out, &cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Desired{Desired: d}})
		}
		return out
	}
	batch := func(vals []*cofferv1.SecretValue, ds []*cofferv1.Desired) *cofferv1.ServerMessage {
		b := &cofferv1.Batch{Desired: ds, AckHoldMs: uint32(ackHold.Milliseconds())}
		if len(vals) > 0 {
			b.Values = &cofferv1.Values{Values: vals}
		}
		return &cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Batch{Batch: b}}
	}
	var last []*cofferv1.SecretValue
	if n := len(chunks); n > 0 {
		for _, c := range chunks[:n-1] {
			out = append(out, batch(c, nil))
		}
		last, size = chunks[n-1], sizes[n-1]
	} else {
		size = 0
	}
	// The last chunk of values rides with the first Desired states, as
	// many as fit.
	var cds []*cofferv1.Desired
	for _, d := range ds {
		n := entry(proto.Size(d))
		if len(cds) == batchDesired || size+n > budget && (len(cds) > 0 || last != nil) {
			out = append(out, batch(last, cds))
			last, cds, size = nil, nil, 0
		}
		cds, size = append(cds, d), size+n
	}
	if len(cds) > 0 || last != nil {
		out = append(out, batch(last, cds))
	}
	return out
}
