package broker

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
)

func TestSessionMessages(t *testing.T) {
	val := func(name string, size int) *cofferv1.SecretValue {
		return &cofferv1.SecretValue{Secret: name, Version: 1, Value: bytes.Repeat([]byte{1}, size)}
	}
	desired := func(n int) []*cofferv1.Desired {
		var ds []*cofferv1.Desired
		for i := range n {
			ds = append(ds, &cofferv1.Desired{ContainerId: fmt.Sprint(i), Generation: 1})
		}
		return ds
	}
	// kinds describes messages: V<values> for Values, D for Desired,
	// B<values>/<desired> for Batch.
	kinds := func(ms []*cofferv1.ServerMessage) string {
		s := ""
		for _, m := range ms {
			switch m := m.Msg.(type) {
			case *cofferv1.ServerMessage_Values:
				s += fmt.Sprintf("V%d ", len(m.Values.Values))
			case *cofferv1.ServerMessage_Desired:
				s += "D "
			case *cofferv1.ServerMessage_Batch:
				s += fmt.Sprintf("B%d/%d ", len(m.Batch.GetValues().GetValues()), len(m.Batch.Desired))
			}
		}
		return s
	}
	big := []*cofferv1.SecretValue{val("a", 700<<10), val("b", 700<<10), val("c", 10)}
	for _, tc := range []struct {
		name  string
		batch bool
		vals  []*cofferv1.SecretValue
		ds    []*cofferv1.Desired
		want  string
	}{
		{"plain", false, []*cofferv1.SecretValue{val("a", 10)}, desired(2), "V1 D D "},
		{"plain, values chunked under 1 MiB", false, big, desired(1), "V1 V2 D "},
		{"batch", true, []*cofferv1.SecretValue{val("a", 10), val("b", 10)}, desired(3), "B2/3 "},
		{"batch, values only", true, []*cofferv1.SecretValue{val("a", 10)}, nil, "B1/0 "},
		{"batch, desired only", true, nil, desired(2), "B0/2 "},
		{"batch, values chunked, last chunk rides with the desired", true, big, desired(2), "B1/0 B2/2 "},
		{"batch, desired capped", true, nil, desired(batchDesired + 1), fmt.Sprintf("B0/%d B0/1 ", batchDesired)},
		{"nothing", true, nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession("a", func() {}, tc.batch, cofferv1.DefaultMaxRecv, nil)
			if got := kinds(s.messages(tc.vals, tc.ds, 0)); got != tc.want {
				t.Errorf("messages = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHasFeature(t *testing.T) {
	for _, tc := range []struct {
		vals []string
		want bool
	}{
		{nil, false},
		{[]string{"batch"}, true},
		{[]string{"x, batch"}, true},
		{[]string{"x", "batch,y"}, true},
		{[]string{"batches"}, false},
	} {
		if got := cofferv1.HasFeature(tc.vals, cofferv1.FeatureBatch); got != tc.want {
			t.Errorf("cofferv1.HasFeature(%q) = %v", tc.vals, got)
		}
	}
}

// A rotation reaches an agent as one message for all of its containers
// (the sender is woken once the broker has pushed every one of them), and
// so does a binding change.
func TestAChangeReachesAnAgentInOneMessage(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/shared", []byte("shared-v1"))
	r.bind(binding("shared", "app/shared", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""), cofferv1.FeaturesKey, cofferv1.FeatureBatch)
	const n = 30
	for i := range n {
		a.report(ctrInfo(fmt.Sprintf("c%d", i), web))
	}
	for i := range n {
		a.waitFiles(fmt.Sprintf("c%d", i), "shared=app/shared@1")
	}
	count := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.messages
	}
	for _, step := range []struct {
		what   string
		change func()
		files  string
	}{
		{"a rotation", func() { r.put("app/shared", []byte("shared-v2")) }, "shared=app/shared@2"},
		{"a binding change", func() {
			r.put("app/more", []byte("more-v1"))
			r.bind(binding("more", "app/more", "app=web"))
		}, "more=app/more@1,shared=app/shared@2"},
	} {
		before := count()
		step.change()
		for i := range n {
			a.waitFiles(fmt.Sprintf("c%d", i), step.files)
		}
		if got := count() - before; got != 1 {
			t.Errorf("%s reached the agent's %d containers in %d messages, want 1", step.what, n, got)
		}
	}
}

// A change pushed to many agents at once asks each to hold back its
// acknowledgements, longer the more agents it went to, within ackHoldMax;
// a small one asks nothing, nor is an agent without Batch asked.
func TestAckHoldAskedOfAFanout(t *testing.T) {
	for _, tc := range []struct {
		agents int
		batch  bool
		want   time.Duration
	}{
		{1, true, 0},
		{ackHoldMinAgents - 1, true, 0},
		{ackHoldMinAgents, true, ackHoldMinAgents * ackHoldPerAgent},
		{400, false, 0},
		{400, true, min(400*ackHoldPerAgent, ackHoldMax)},
		{5000, true, ackHoldMax},
	} {
		t.Run(fmt.Sprintf("%d agents, batch=%v", tc.agents, tc.batch), func(t *testing.T) {
			b := New(Config{})
			var ss []*session
			b.mu.Lock()
			first := b.holdWakes()
			for i := range tc.agents {
				s := newSession(fmt.Sprint("a", i), func() {}, tc.batch, cofferv1.DefaultMaxRecv, nil)
				s.enqueue(nil, &cofferv1.Desired{ContainerId: fmt.Sprint("c", i), Generation: 1})
				b.held[s] = struct{}{}
				ss = append(ss, s)
			}
			released := time.Now()
			b.releaseWakes(first)
			b.mu.Unlock()
			for _, s := range ss {
				vals, ds, hold := s.take()
				if hold != tc.want {
					t.Fatalf("%s asked a hold of %s, want %s", s.agent, hold, tc.want)
				}
				for _, m := range s.messages(vals, ds, hold) {
					if got := m.GetBatch().GetAckHoldMs(); got != uint32(tc.want.Milliseconds()) {
						t.Fatalf("batch asks %d ms, want %s", got, tc.want)
					}
				}
				if _, _, again := s.take(); again != 0 {
					t.Fatalf("the next send asks %s again", again)
				}
			}
			// The fan-out counts as settled once the held
			// acknowledgements are due, not before.
			if tc.want > 0 {
				b.WaitSettled(time.Second)
				if d := time.Since(released); d < tc.want {
					t.Fatalf("settled %s after the pushes, before the %s hold ended", d, tc.want)
				}
			}
		})
	}
}

// What an agent says it held an acknowledgement back comes off the
// delivery's latency only up to the most a server asks, and never below
// zero: a lying agent cannot make its deliveries look faster than that.
func TestAckLatencyBoundsTheAgentsClaim(t *testing.T) {
	for _, tc := range []struct {
		elapsed time.Duration
		heldMs  uint32
		want    time.Duration
	}{
		{400 * time.Millisecond, 0, 400 * time.Millisecond},
		{400 * time.Millisecond, 250, 150 * time.Millisecond},
		{time.Second, ^uint32(0), time.Second - ackHoldMax},
		{100 * time.Millisecond, 250, 0},
	} {
		if got := ackLatency(tc.elapsed, tc.heldMs); got != tc.want {
			t.Errorf("ackLatency(%s, %d ms) = %s, want %s", tc.elapsed, tc.heldMs, got, tc.want)
		}
	}
}
