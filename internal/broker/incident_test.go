package broker

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A quarantined host's containers are emptied at once and get nothing
// more (not a rotation, not a new binding, not a new container); other
// hosts are untouched. The held list names what each container had.
func TestQuarantineEmptiesAHostAndKeepsItEmpty(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1"))
	r.bind(binding("db", "app/db", "app=web"))
	bad := r.dial(r.enroll("node-bad", nil, ""))
	good := r.dial(r.enroll("node-good", nil, ""))
	bad.report(ctrInfo("b1", web))
	good.report(ctrInfo("g1", web))
	bad.waitFiles("b1", "db=app/db@1")
	good.waitFiles("g1", "db=app/db@1")
	bad.ack("b1", bad.generation("b1"))
	for deadline := time.Now().Add(5 * time.Second); ; {
		hs := r.b.Rollout("app/db")
		if len(hs) == 2 && (hs[0].Version == 1 && hs[0].Agent == "node-bad" || hs[1].Version == 1 && hs[1].Agent == "node-bad") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ack was not taken: %+v", hs)
		}
		time.Sleep(5 * time.Millisecond)
	}

	held := r.b.Quarantine("node-bad")
	if len(held) != 1 || held[0].ContainerID != "b1" || len(held[0].Held) != 1 || held[0].Held[0].Secret != "app/db" || held[0].Held[0].Version != 1 {
		t.Fatalf("held: %+v", held)
	}
	bad.waitFiles("b1", "")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if emptied, connected := r.b.Emptied(ctx, "node-bad"); emptied || !connected {
		t.Fatalf("emptied before the ack: %v %v", emptied, connected)
	}
	cancel()
	bad.ack("b1", bad.generation("b1"))
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if emptied, _ := r.b.Emptied(ctx, "node-bad"); !emptied {
		t.Fatal("not emptied after the ack")
	}
	r.put("app/db", []byte("v2"))
	good.waitFiles("g1", "db=app/db@2")
	bad.report(ctrInfo("b2", web))
	bad.waitFiles("b2", "")
	bad.waitFiles("b1", "")
	for _, v := range bad.received() {
		if v == "app/db@2" {
			t.Fatal("a quarantined host was sent the new version")
		}
	}
}

// A freeze sends nothing new anywhere until it is lifted; then every
// container gets its state.
func TestFreezeHoldsDeliveriesUntilLifted(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	r.b.Freeze(true)
	if !r.b.Frozen() {
		t.Fatal("not frozen")
	}
	r.put("app/db", []byte("v2"))
	a.report(ctrInfo("c2", web))
	time.Sleep(100 * time.Millisecond)
	if fs, _ := a.files("c1"); fs["db"] != "app/db@1" {
		t.Fatalf("a frozen broker sent a rotation: %v", fs)
	}
	if _, ok := a.files("c2"); ok {
		t.Fatal("a frozen broker served a new container")
	}
	r.b.Freeze(false)
	a.waitFiles("c1", "db=app/db@2")
	a.waitFiles("c2", "db=app/db@2")
}

// A quarantined host's dynamic credentials are revoked at once, and its
// containers ask for no new lease while it is quarantined.
func TestQuarantineRevokesLeasesAndAsksForNone(t *testing.T) {
	ls := &fakeLeases{dynamic: map[string]bool{"db/dyn": true}, leases: map[string]uint64{}, asked: map[string]int{}}
	r := newRig(t, func(c *Config) { c.Leases = ls }, nil)
	r.bind(binding("dyn", "db/dyn", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "")
	ls.issue(r.b, "c1", 1001)
	a.waitFiles("c1", "dyn=db/dyn@1001")

	r.b.Quarantine("node-a")
	a.waitFiles("c1", "")
	waitFor(t, "c1's lease released", func() bool { return slices.Contains(ls.releases(), "c1/db/dyn: "+ReleaseQuarantined) })
	ls.mu.Lock()
	before := ls.asked["c2"]
	ls.mu.Unlock()
	a.report(ctrInfo("c2", web))
	a.waitFiles("c2", "")
	ls.mu.Lock()
	after := ls.asked["c2"]
	ls.mu.Unlock()
	if after != before {
		t.Fatalf("a quarantined host's new container asked for a lease (%d times)", after-before)
	}
}
