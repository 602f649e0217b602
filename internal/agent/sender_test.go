package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/secret"
)

// sentStream is a Sync stream that records what the agent sends.
type sentStream struct {
	cofferv1.AgentService_SyncClient
	sent chan *cofferv1.AgentMessage
}

func (s *sentStream) Send(m *cofferv1.AgentMessage) error {
	s.sent <- m
	return nil
}

// ackRig is an agent whose deliveries to the containers in block wait for
// release, with its sender writing to a sentStream.
type ackRig struct {
	a       *Agent
	d       *memory.Deliverer
	stream  *sentStream
	release chan struct{}
	ctx     context.Context
}

func newAckRig(t *testing.T, batch bool, ackWait time.Duration, block ...string) *ackRig {
	t.Helper()
	r := &ackRig{release: make(chan struct{}), stream: &sentStream{sent: make(chan *cofferv1.AgentMessage, 64)}}
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx = ctx
	r.d = memory.New(memory.Config{Fail: func(c container.Info) error {
		if slices.Contains(block, c.ID) {
			select {
			case <-r.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}})
	r.a = New(Config{Runtime: fake.New(), Deliverer: r.d})
	r.a.ackWait = ackWait
	send := make(chan *cofferv1.AgentMessage, 64)
	r.a.send = send
	var batchAcks atomic.Bool
	batchAcks.Store(batch)
	done := make(chan error, 1)
	go func() { done <- r.a.sender(ctx, r.stream, send, &batchAcks) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("sender: %v", err)
		}
	})
	return r
}

// rotate sends one Batch with a new value for each of ids' desired states.
func (r *ackRig) rotate(gen uint64, ids ...string) { r.rotateHeld(gen, 0, ids...) }

// rotateHeld is rotate with the server asking for a hold of holdMs on the
// acknowledgements.
func (r *ackRig) rotateHeld(gen uint64, holdMs uint32, ids ...string) {
	var vals []*cofferv1.SecretValue
	var desired []*cofferv1.Desired
	for _, id := range ids {
		r.a.mu.Lock()
		r.a.running[id] = container.Info{ID: id, Name: "n-" + id, PID: 100}
		r.a.mu.Unlock()
		vals = append(vals, &cofferv1.SecretValue{Secret: "s/" + id, Version: gen, Value: []byte("v")})
		desired = append(desired, &cofferv1.Desired{ContainerId: id, Generation: gen, Files: []*cofferv1.FileRef{{Secret: "s/" + id, Version: gen, File: "f"}}})
	}
	r.a.handle(r.ctx, &cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Batch{Batch: &cofferv1.Batch{
		Values: &cofferv1.Values{Values: vals}, Desired: desired, AckHoldMs: holdMs}}})
}

// next returns the next message sent, or fails after a bounded wait.
func (r *ackRig) next(t *testing.T) *cofferv1.AgentMessage {
	t.Helper()
	select {
	case m := <-r.stream.sent:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent")
		return nil
	}
}

// acked lists the acknowledgements of m, "id@generation" each.
func acked(m *cofferv1.AgentMessage) []string {
	var acks []*cofferv1.Applied
	if a := m.GetApplied(); a != nil {
		acks = append(acks, a)
	}
	acks = append(acks, m.GetAppliedBatch().GetApplied()...)
	var out []string
	for _, a := range acks {
		out = append(out, fmt.Sprintf("%s@%d", a.ContainerId, a.Generation))
	}
	return out
}

// The acknowledgements of one rotation go together while its deliveries are
// under way: none is sent before the slowest container is done, and then
// all go in one AppliedBatch.
func TestAcksOfARotationGoTogether(t *testing.T) {
	r := newAckRig(t, true, time.Hour, "c3")
	r.rotate(1, "c1", "c2", "c3")
	// c1 and c2 are delivered; c3 waits.
	if err := r.d.Wait(r.ctx, func(all map[string]map[string]secret.File) bool { return len(all["c1"]) == 1 && len(all["c2"]) == 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-r.stream.sent:
		t.Fatalf("sent %v while c3's delivery was under way", acked(m))
	case <-time.After(50 * time.Millisecond):
	}
	close(r.release)
	m := r.next(t)
	got := acked(m)
	slices.Sort(got)
	if m.GetAppliedBatch() == nil || !slices.Equal(got, []string{"c1@1", "c2@1", "c3@1"}) {
		t.Fatalf("sent %v (batch %v), want the three acknowledgements in one AppliedBatch", got, m.GetAppliedBatch() != nil)
	}
}

// A delivery that hangs holds the others' acknowledgements no longer than
// ackWait.
func TestAckWaitIsBounded(t *testing.T) {
	r := newAckRig(t, true, 50*time.Millisecond, "c3")
	r.rotate(1, "c1", "c2", "c3")
	var got []string
	for len(got) < 2 {
		got = append(got, acked(r.next(t))...)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"c1@1", "c2@1"}) {
		t.Fatalf("sent %v, want c1's and c2's acknowledgements while c3 hangs", got)
	}
}

// A server without AppliedBatch gets one Applied per message; a message
// that is not an acknowledgement ends a batch and keeps its place.
func TestAcksKeepTheirOrder(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			r := newAckRig(t, batch, time.Hour)
			ack := func(id string) *cofferv1.AgentMessage {
				m, a := newApplied()
				a.ContainerId, a.Generation = id, 1
				return m
			}
			stopped := &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Stopped{Stopped: &cofferv1.ContainerStopped{Id: "c9"}}}
			r.a.mu.Lock()
			for _, m := range []*cofferv1.AgentMessage{ack("c1"), ack("c2"), stopped, ack("c3")} {
				r.a.enqueueLocked(m)
			}
			r.a.mu.Unlock()
			var seq []string
			for len(seq) < 4 {
				m := r.next(t)
				if m.GetStopped() != nil {
					seq = append(seq, "stopped")
					continue
				}
				if !batch && m.GetAppliedBatch() != nil {
					t.Fatal("an AppliedBatch to a server without the feature")
				}
				seq = append(seq, acked(m)...)
			}
			if want := []string{"c1@1", "c2@1", "stopped", "c3@1"}; !slices.Equal(seq, want) {
				t.Fatalf("sent %v, want %v", seq, want)
			}
		})
	}
}

// A server that sends one change to many agents asks them to hold back
// their acknowledgements (Batch.ack_hold_ms): the files are delivered at
// once, the acknowledgements go together when the hold ends, each saying
// how long it was held.
func TestAckHoldAskedByTheServer(t *testing.T) {
	r := newAckRig(t, true, 20*time.Millisecond)
	start := time.Now()
	r.rotateHeld(1, 300, "c1", "c2")
	if err := r.d.Wait(r.ctx, func(all map[string]map[string]secret.File) bool { return len(all["c1"]) == 1 && len(all["c2"]) == 1 }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Skipf("delivery took %s on this machine: the hold cannot be told apart", d)
	}
	m := r.next(t)
	waited := time.Since(start)
	got := acked(m)
	slices.Sort(got)
	if !slices.Equal(got, []string{"c1@1", "c2@1"}) || m.GetAppliedBatch() == nil {
		t.Fatalf("sent %v, want both acknowledgements in one AppliedBatch", got)
	}
	if waited < 300*time.Millisecond {
		t.Fatalf("acknowledgements sent %s after the batch, want the 300 ms asked for", waited)
	}
	for _, a := range m.GetAppliedBatch().GetApplied() {
		if a.HeldMs < 50 || time.Duration(a.HeldMs)*time.Millisecond > waited {
			t.Errorf("%s says it was held %d ms; it was ready within %s of the batch and sent %s after it", a.ContainerId, a.HeldMs, 250*time.Millisecond, waited)
		}
	}
}

// A hold ends at once when the agent has something else to say, which goes
// after the acknowledgements held: order is kept, and a container's stop
// is not held up.
func TestAckHoldEndsAtAnotherMessage(t *testing.T) {
	r := newAckRig(t, true, 20*time.Millisecond)
	r.a.setAckHold(60_000)
	start := time.Now()
	ack, a := newApplied()
	a.ContainerId, a.Generation = "c1", 1
	stopped := &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Stopped{Stopped: &cofferv1.ContainerStopped{Id: "c9"}}}
	r.a.mu.Lock()
	r.a.enqueueLocked(ack)
	r.a.mu.Unlock()
	time.Sleep(20 * time.Millisecond) // the ack is held
	r.a.mu.Lock()
	r.a.enqueueLocked(stopped)
	r.a.mu.Unlock()
	if got := acked(r.next(t)); !slices.Equal(got, []string{"c1@1"}) {
		t.Fatalf("first sent %v, want c1's acknowledgement", got)
	}
	if r.next(t).GetStopped() == nil {
		t.Fatal("the stop did not follow the acknowledgement")
	}
	if d := time.Since(start); d > maxAckHold/2 {
		t.Fatalf("sent %s after the stop was queued: the hold did not end", d)
	}
}

// Whatever a server asks, acknowledgements are held at most maxAckHold;
// an agent whose server did not announce AppliedBatch holds nothing.
func TestAckHoldIsBounded(t *testing.T) {
	r := newAckRig(t, true, 20*time.Millisecond)
	before := time.Now()
	r.a.setAckHold(^uint32(0))
	if until := time.Unix(0, r.a.ackHold.Load()); until.After(time.Now().Add(maxAckHold)) || until.Before(before.Add(maxAckHold)) {
		t.Fatalf("hold until %s from now, want %s", time.Until(until), maxAckHold)
	}
	r.a.setAckHold(10) // a shorter hold asked later does not cut the longer one
	if until := time.Unix(0, r.a.ackHold.Load()); until.Before(before.Add(maxAckHold)) {
		t.Fatalf("a later, shorter hold cut the hold to %s from now", time.Until(until))
	}

	old := newAckRig(t, false, 20*time.Millisecond)
	start := time.Now()
	old.rotateHeld(1, 1000, "c1")
	if got := acked(old.next(t)); !slices.Equal(got, []string{"c1@1"}) {
		t.Fatalf("sent %v", got)
	}
	if d := time.Since(start); d > maxAckHold/2 {
		t.Fatalf("acknowledged %s after the batch to a server without AppliedBatch: it was held", d)
	}
}
