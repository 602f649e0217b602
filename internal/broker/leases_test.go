package broker

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"coffer/internal/catalog"
	"coffer/internal/secret"
)

// fakeLeases is a lease source whose leases the test issues by hand.
type fakeLeases struct {
	mu       sync.Mutex
	dynamic  map[string]bool
	leases   map[string]uint64 // container id → version
	asked    map[string]int    // container id → Lease calls without a lease
	released []string          // "container/secret: reason"
}

func (f *fakeLeases) Dynamic(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dynamic[name]
}

func (f *fakeLeases) Lease(h LeaseHolder, name string) (uint64, secret.Value, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.leases[h.ContainerID]
	if !ok {
		f.asked[h.ContainerID]++
		return 0, nil, false
	}
	return v, secret.Value(fmt.Sprintf("creds-of-%s-%d", h.ContainerID, v)), true
}

func (f *fakeLeases) Peek(id, name string) (uint64, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.leases[id]
	if v == 0 {
		return 0, ""
	}
	return v, fmt.Sprintf("lease-%d", v)
}

func (f *fakeLeases) Release(id, name, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, id+"/"+name+": "+reason)
	delete(f.leases, id)
}

func (f *fakeLeases) issue(b *Broker, id string, v uint64) {
	f.mu.Lock()
	f.leases[id] = v
	f.mu.Unlock()
	b.LeaseChanged(id)
}

func (f *fakeLeases) releases() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.released)
}

// Each container bound to a dynamic secret gets its own value under a
// version of its own, once its lease is there; stopping it or losing the
// binding releases the lease; the rollout does not call holders of
// different leases pending.
func TestDynamicSecretPerContainer(t *testing.T) {
	ls := &fakeLeases{dynamic: map[string]bool{"db/dyn": true}, leases: map[string]uint64{}, asked: map[string]int{}}
	r := newRig(t, func(c *Config) { c.Leases = ls }, nil)
	r.bind(binding("dyn", "db/dyn", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.report(ctrInfo("c2", web))
	a.waitFiles("c1", "")
	a.waitFiles("c2", "")
	ls.mu.Lock()
	asked := ls.asked["c1"] > 0 && ls.asked["c2"] > 0
	ls.mu.Unlock()
	if !asked {
		t.Fatal("no lease asked for")
	}
	if h := r.b.Rollout("db/dyn"); len(h) != 2 || !h[0].Pending || !h[1].Pending {
		t.Fatalf("holders waiting for their leases are not pending: %+v", h)
	}

	ls.issue(r.b, "c1", 1001)
	ls.issue(r.b, "c2", 1002)
	a.waitFiles("c1", "dyn=db/dyn@1001")
	a.waitFiles("c2", "dyn=db/dyn@1002")
	a.mu.Lock()
	v1, v2 := string(a.values[verKey{"db/dyn", 1001}]), string(a.values[verKey{"db/dyn", 1002}])
	a.mu.Unlock()
	if v1 != "creds-of-c1-1001" || v2 != "creds-of-c2-1002" {
		t.Fatal("containers did not get their own leases' values")
	}
	a.ack("c1", a.generation("c1"))
	a.ack("c2", a.generation("c2"))
	r.waitAudit("delivery.apply", 2, nil)
	for _, h := range r.b.Rollout("db/dyn") {
		if h.Pending || h.Version == 0 {
			t.Fatalf("holder of its own lease is pending: %+v", h)
		}
	}
	if id := r.b.LeaseOf("c1", "db/dyn"); id != "lease-1001" {
		t.Fatalf("LeaseOf = %q", id)
	}

	// A rotation of c1's lease reaches c1 only.
	g2 := a.generation("c2")
	ls.issue(r.b, "c1", 1003)
	a.waitFiles("c1", "dyn=db/dyn@1003")
	if a.generation("c2") != g2 {
		t.Fatal("another container's lease rotation touched c2")
	}

	// Stopped: released.
	a.stop("c1")
	waitFor(t, "c1 released", func() bool { return slices.Contains(ls.releases(), "c1/db/dyn: "+ReleaseStopped) })

	// A binding change that keeps the grant releases nothing; losing it does.
	r.bind(binding("other", "x/y", "app=web"))
	if got := ls.releases(); len(got) != 1 {
		t.Fatalf("releases after an unrelated binding: %v", got)
	}
	r.cat.mu.Lock()
	r.cat.set = r.cat.set.Without("dyn")
	r.cat.mu.Unlock()
	r.b.Changed(catalog.Change{Kind: catalog.BindingDeleted, Binding: "dyn"})
	waitFor(t, "c2 released", func() bool { return slices.Contains(ls.releases(), "c2/db/dyn: "+ReleaseUngranted) })
	a.waitFiles("c2", "")

	// The agent removed: its containers' leases go too.
	r.bind(binding("dyn", "db/dyn", "app=web"))
	a.report(ctrInfo("c3", web))
	a.waitFiles("c3", "")
	r.b.Disconnect("node-a")
	waitFor(t, "c3 released", func() bool { return slices.Contains(ls.releases(), "c3/db/dyn: "+ReleaseRemoved) })
	noValueIn(t, r.aud, []byte("creds-of"))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stolen agent key cannot mint credentials outside its scope, nor for a
// container another agent holds: no lease is even asked for.
func TestDynamicSecretNeedToKnow(t *testing.T) {
	ls := &fakeLeases{dynamic: map[string]bool{"db/dyn": true}, leases: map[string]uint64{}, asked: map[string]int{}}
	r := newRig(t, func(c *Config) { c.Leases = ls }, nil)
	r.bind(binding("dyn", "db/dyn", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "")
	ls.issue(r.b, "c1", 7)
	a.waitFiles("c1", "dyn=db/dyn@7")

	scoped := r.dial(r.enroll("node-s", nil, "other/"))
	scoped.report(ctrInfo("s1", web))
	scoped.waitFiles("s1", "")
	b := r.dial(r.enroll("node-b", nil, ""))
	b.report(ctrInfo("c1", web)) // agent A's container
	b.report(ctrInfo("b1", nil))
	b.waitFiles("b1", "")
	ls.mu.Lock()
	asked := ls.asked["s1"]
	ls.mu.Unlock()
	if asked != 0 {
		t.Fatal("a lease was asked for a container whose agent's scope excludes the secret")
	}
	if fs, ok := b.files("c1"); ok || len(b.received()) != 0 {
		t.Fatalf("agent B got another agent's container's lease: %v", fs)
	}
	if got := ls.releases(); len(got) != 0 {
		t.Fatalf("a refused report released A's lease: %v", got)
	}
}
