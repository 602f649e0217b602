package broker

import (
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/internal/policy"
)

// The binding's rotation contract travels to the agent on every file, and
// a change of contract alone is a new desired state.
func TestRotationContractReachesTheAgent(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/key", []byte("k1-value"))
	b := binding("key", "app/key", "app=web")
	b.Rotation = "signal:SIGHUP"
	r.bind(b)
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "key=app/key@1")
	rotation := func() string {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.desired["c1"].GetFiles()[0].GetRotation()
	}
	if got := rotation(); got != "signal:SIGHUP" {
		t.Fatalf("rotation on the wire = %q", got)
	}
	gen := a.generation("c1")
	b.Rotation = "restart-process"
	r.bind(b)
	deadline := time.Now().Add(5 * time.Second)
	for rotation() != "restart-process" {
		if time.Now().After(deadline) {
			t.Fatalf("a new contract was not sent (generation %d, was %d)", a.generation("c1"), gen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Under the contract none a container keeps the version it was first
// given: a rotation does not reach it, a container reported later gets the
// current version, a revocation still removes the file, and the rollout
// does not count it as pending.
func TestRotationNoneKeepsTheFirstVersion(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.put("app/api", []byte("k1-value"))
	b := binding("db", "app/db", "app=web")
	b.Rotation = policy.RotationNone
	r.bind(b)
	r.bind(binding("api", "app/api", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "api=app/api@1,db=app/db@1")
	a.ack("c1", a.generation("c1"))

	r.put("app/db", []byte("v2-value"))
	r.put("app/api", []byte("k2-value")) // a file contract: rotates, and makes c1 a new state
	a.waitFiles("c1", "api=app/api@2,db=app/db@1")
	a.ack("c1", a.generation("c1"))
	a.report(ctrInfo("c2", web))
	a.waitFiles("c2", "api=app/api@2,db=app/db@2")
	a.ack("c2", a.generation("c2"))
	// The agent reports c1 again (a reconnect): still pinned.
	a.report(ctrInfo("c1", web))
	time.Sleep(20 * time.Millisecond)
	a.waitFiles("c1", "api=app/api@2,db=app/db@1")
	a.ack("c1", a.generation("c1"))

	deadline := time.Now().Add(5 * time.Second)
	for {
		hs := r.b.Rollout("app/db")
		ok := len(hs) == 2
		for _, h := range hs {
			ok = ok && !h.Pending && h.Rotation == policy.RotationNone
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout of a none binding: %+v; want both held, none pending", hs)
		}
		time.Sleep(5 * time.Millisecond)
	}

	r.cat.mu.Lock()
	r.cat.current["app/db"] = 0
	r.cat.mu.Unlock()
	r.b.Changed(catalog.Change{Kind: catalog.SecretDeleted, Secret: "app/db"})
	a.waitFiles("c1", "api=app/api@2")
	a.waitFiles("c2", "api=app/api@2")
}

// A container reported again (restarted, or its labels changed) is sent
// its whole state from generation 1 again: its first acknowledgement is
// not taken for a repeat of the one before the report, which had the same
// generation. Until it comes the container is pending, and when it comes
// what changed is audited.
func TestAckAfterAReportIsNotARepeat(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("db-value"))
	r.put("app/cache", []byte("cache-value"))
	r.bind(binding("db", "app/db", "app=web"))
	r.bind(binding("cache", "app/cache", "tier=back"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	gen := a.generation("c1")
	a.ack("c1", gen)
	r.waitAudit("delivery.apply", 1, nil)

	a.report(ctrInfo("c1", map[string]string{"app": "web", "tier": "back"}))
	a.waitFiles("c1", "cache=app/cache@1,db=app/db@1")
	if got := a.generation("c1"); got != gen {
		t.Fatalf("generation after the report %d, want %d (the case this test is about)", got, gen)
	}
	if hs := r.b.Rollout("app/cache"); len(hs) != 1 {
		t.Fatalf("rollout of app/cache: %+v", hs)
	}
	for _, h := range r.b.Rollout("app/cache") {
		if !h.Pending {
			t.Fatalf("pending before the agent acknowledged the new state: %+v", h)
		}
	}
	a.ack("c1", gen)
	r.waitAudit("delivery.apply", 1, func(e audit.Event) bool { return e.Details["secret"] == "app/cache" })
	r.waitHolder("app/cache", "c1", func(h Holder) bool { return !h.Pending && h.Version == 1 })
}
