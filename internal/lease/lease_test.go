package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

// fakeIssuer issues {"password","username"} leases and records renewals
// and revocations.
type fakeIssuer struct {
	mu        sync.Mutex
	n         int
	ttl       time.Duration
	renewable bool
	issueErrs []error       // returned by the next issues, in order
	block     chan struct{} // when set, Issue waits for it to be closed
	renew     func(id string, n int) (time.Duration, error)
	renews    map[string]int
	revokeErr []error
	live      map[string]bool
	revoked   []string
}

func newIssuer(ttl time.Duration) *fakeIssuer {
	return &fakeIssuer{ttl: ttl, renewable: true, renews: map[string]int{}, live: map[string]bool{}}
}

func (f *fakeIssuer) ValidateItem(item string) error {
	if !strings.Contains(item, "/creds/") {
		return fmt.Errorf("%w: not a creds path", keystore.ErrInvalidRef)
	}
	return nil
}

func (f *fakeIssuer) Issue(ctx context.Context, item string) (keystore.Lease, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.issueErrs) > 0 {
		err := f.issueErrs[0]
		f.issueErrs = f.issueErrs[1:]
		return keystore.Lease{}, &keystore.Error{Upstream: "dyn", Item: item, Err: err}
	}
	f.n++
	id := fmt.Sprintf("%s/lease-%d", item, f.n)
	f.live[id] = true
	v, _ := json.Marshal(map[string]string{"username": fmt.Sprintf("user-%d", f.n), "password": fmt.Sprintf("SECRET-pw-%d", f.n)})
	return keystore.Lease{ID: id, TTL: f.ttl, Renewable: f.renewable, Value: v}, nil
}

func (f *fakeIssuer) Renew(ctx context.Context, id string, inc time.Duration) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews[id]++
	if !f.live[id] {
		return 0, &keystore.Error{Upstream: "dyn", Item: id, Err: keystore.ErrNotFound}
	}
	if f.renew != nil {
		return f.renew(id, f.renews[id])
	}
	return inc, nil
}

func (f *fakeIssuer) Revoke(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.revokeErr) > 0 {
		err := f.revokeErr[0]
		f.revokeErr = f.revokeErr[1:]
		return &keystore.Error{Upstream: "dyn", Item: id, Err: err}
	}
	delete(f.live, id)
	f.revoked = append(f.revoked, id)
	return nil
}

func (f *fakeIssuer) Close() error { return nil }

func (f *fakeIssuer) isRevoked(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.revoked {
		if r == id {
			return true
		}
	}
	return false
}

func (f *fakeIssuer) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

type fakeCatalog struct {
	mu    sync.Mutex
	metas map[string]catalog.SecretMeta
}

func (c *fakeCatalog) Linked(context.Context) ([]catalog.SecretMeta, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []catalog.SecretMeta
	for _, m := range c.metas {
		out = append(out, m)
	}
	return out, nil
}

func (c *fakeCatalog) Show(_ context.Context, name string) (catalog.SecretMeta, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.metas[name]
	if !ok {
		return m, catalog.ErrNotFound
	}
	return m, nil
}

func (c *fakeCatalog) set(name, from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if from == "" {
		delete(c.metas, name)
		return
	}
	r, _ := keystore.ParseRef(from)
	c.metas[name] = catalog.SecretMeta{Name: name, Link: &catalog.Link{From: from, Upstream: r.Upstream, Item: r.Item, Key: r.Key, Dynamic: true}}
}

type fakeAudit struct {
	mu sync.Mutex
	ev []audit.Event
}

func (a *fakeAudit) Append(_ context.Context, e audit.Event) (audit.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev = append(a.ev, e)
	return e, nil
}

func (a *fakeAudit) find(action, result, leaseID string) *audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.ev {
		e := &a.ev[i]
		if e.Action == action && (result == "" || e.Result == result) && (leaseID == "" || e.Details["lease_id"] == leaseID) {
			return e
		}
	}
	return nil
}

func (a *fakeAudit) count(action, result string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, e := range a.ev {
		if e.Action == action && e.Result == result {
			n++
		}
	}
	return n
}

type fixture struct {
	m     *Manager
	is    *fakeIssuer
	cat   *fakeCatalog
	aud   *fakeAudit
	mu    sync.Mutex
	told  map[string]int
	toldC chan string
}

func setup(t *testing.T, is *fakeIssuer, tweak func(*Config)) *fixture {
	t.Helper()
	f := &fixture{is: is, cat: &fakeCatalog{metas: map[string]catalog.SecretMeta{}}, aud: &fakeAudit{}, told: map[string]int{}, toldC: make(chan string, 100)}
	f.cat.set("payments/db", "dyn:database/creds/app")
	cfg := Config{Issuers: keystore.Issuers{"dyn": is}, Catalog: f.cat, Audit: f.aud,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RotateGrace: 50 * time.Millisecond, Timeout: 5 * time.Second}
	if tweak != nil {
		tweak(&cfg)
	}
	f.m = New(cfg)
	f.m.SetNotify(func(id string) {
		f.mu.Lock()
		f.told[id]++
		f.mu.Unlock()
		select {
		case f.toldC <- id:
		default:
		}
	})
	if err := f.m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.m.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return f
}

func holder(id string) broker.LeaseHolder {
	return broker.LeaseHolder{ContainerID: id, Container: "name-" + id, Image: "busybox", Agent: "host-1"}
}

// eventually polls cond for up to 5 s (a bounded wait, not a timing
// assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitLease asks for a lease until it is there.
func (f *fixture) waitLease(t *testing.T, id, name string) (uint64, string) {
	t.Helper()
	var v uint64
	var val string
	eventually(t, "lease of "+id, func() bool {
		ver, value, ok := f.m.Lease(holder(id), name)
		v, val = ver, string(value)
		return ok
	})
	return v, val
}

func TestLeasePerContainerAndRevokeOnRelease(t *testing.T) {
	f := setup(t, newIssuer(time.Hour), nil)
	if !f.m.Dynamic("payments/db") || f.m.Dynamic("other") {
		t.Fatal("Dynamic")
	}
	va, a := f.waitLease(t, "c1", "payments/db")
	vb, b := f.waitLease(t, "c2", "payments/db")
	if va == vb || a == b || va == 0 {
		t.Fatalf("two containers share a lease: %d %d", va, vb)
	}
	if v, _, _ := f.m.Lease(holder("c1"), "payments/db"); v != va {
		t.Fatal("a container's lease changed without cause")
	}
	f.mu.Lock()
	told := f.told["c1"]
	f.mu.Unlock()
	if told != 1 {
		t.Fatalf("broker told %d times of c1's lease", told)
	}
	_, idA := f.m.Peek("c1", "payments/db")
	_, idB := f.m.Peek("c2", "payments/db")
	ev := f.aud.find("lease.issue", audit.ResultOK, idA)
	if ev == nil || ev.Details["container_id"] != "c1" || ev.Details["container"] != "name-c1" || ev.Details["agent"] != "host-1" || ev.Details["secret"] != "payments/db" {
		t.Fatalf("lease.issue record: %+v", ev)
	}

	f.m.Release("c1", "payments/db", broker.ReleaseStopped)
	eventually(t, "c1's lease revoked", func() bool { return f.is.isRevoked(idA) })
	if f.is.isRevoked(idB) {
		t.Fatal("another container's lease was revoked")
	}
	eventually(t, "lease.revoke audited", func() bool { return f.aud.find("lease.revoke", audit.ResultOK, idA) != nil })
	ev = f.aud.find("lease.revoke", audit.ResultOK, idA)
	if ev.Details["container_id"] != "c1" || ev.Details["reason"] != broker.ReleaseStopped || ev.Object != "container:c1" {
		t.Fatalf("lease.revoke record: %+v", ev)
	}
	if v, _ := f.m.Peek("c1", "payments/db"); v != 0 {
		t.Fatal("a released lease is still held")
	}
	f.noValueInAudit(t)
}

func (f *fixture) noValueInAudit(t *testing.T) {
	t.Helper()
	f.aud.mu.Lock()
	defer f.aud.mu.Unlock()
	for _, e := range f.aud.ev {
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), "SECRET-pw") {
			t.Fatalf("credential in audit: %s", b)
		}
	}
}

// Lease never waits for the issuer: the broker calls it under its lock.
func TestLeaseNeverBlocks(t *testing.T) {
	is := newIssuer(time.Hour)
	is.block = make(chan struct{})
	f := setup(t, is, nil)
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			f.m.Lease(holder(fmt.Sprint("c", i%5)), "payments/db")
			f.m.Peek("c1", "payments/db")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Lease blocked while the issuer hangs")
	}
	// Released while its issue hangs: the lease Vault then makes is revoked.
	f.m.Release("c1", "payments/db", broker.ReleaseStopped)
	close(is.block)
	f.waitLease(t, "c2", "payments/db")
	eventually(t, "the late lease of c1 revoked", func() bool { return f.aud.find("lease.revoke", audit.ResultOK, "") != nil })
	eventually(t, "only c0, c2..c4 hold leases", func() bool { return is.liveCount() == 4 })
}

func TestRenewalAndRotation(t *testing.T) {
	is := newIssuer(100 * time.Millisecond)
	// Three full renewals, then capped (max TTL near): a new lease.
	is.renew = func(id string, n int) (time.Duration, error) {
		if n <= 3 {
			return 100 * time.Millisecond, nil
		}
		return 20 * time.Millisecond, nil
	}
	f := setup(t, is, nil)
	v1, val1 := f.waitLease(t, "c1", "payments/db")
	_, id1 := f.m.Peek("c1", "payments/db")
	eventually(t, "a rotation", func() bool { v, _ := f.m.Peek("c1", "payments/db"); return v != v1 })
	is.mu.Lock()
	renewed := is.renews[id1]
	is.mu.Unlock()
	if renewed < 4 {
		t.Fatalf("renewed %d times before rotating", renewed)
	}
	_, val2 := f.waitLease(t, "c1", "payments/db")
	if val2 == val1 {
		t.Fatal("the rotation kept the credentials")
	}
	eventually(t, "the replaced lease revoked after the grace", func() bool { return is.isRevoked(id1) })
	// The revocation is recorded once the issuer has answered it.
	var ev *audit.Event
	eventually(t, "the revocation recorded", func() bool { ev = f.aud.find("lease.revoke", audit.ResultOK, id1); return ev != nil })
	if !strings.HasPrefix(ev.Details["reason"], "replaced by lease ") {
		t.Fatalf("%+v", ev)
	}
	_, id2 := f.m.Peek("c1", "payments/db")
	if e := f.aud.find("lease.issue", audit.ResultOK, id2); e == nil || e.Details["replaces"] != id1 {
		t.Fatalf("the new lease.issue does not name the one it replaces: %+v", e)
	}
}

// A lease the upstream forgot (renewal: not found) is replaced, and the
// failure audited.
func TestRenewNotFoundRotates(t *testing.T) {
	is := newIssuer(60 * time.Millisecond)
	f := setup(t, is, nil)
	v1, _ := f.waitLease(t, "c1", "payments/db")
	_, id1 := f.m.Peek("c1", "payments/db")
	is.mu.Lock()
	delete(is.live, id1) // revoked behind Coffer's back
	is.mu.Unlock()
	eventually(t, "a new lease", func() bool { v, _ := f.m.Peek("c1", "payments/db"); return v != 0 && v != v1 })
	if f.aud.find("lease.renew", audit.ResultError, id1) == nil {
		t.Fatal("renewal failure not audited")
	}
}

// Unreachable while renewing: retried (audited once), the lease kept.
func TestRenewUnreachableRetries(t *testing.T) {
	is := newIssuer(200 * time.Millisecond)
	fails := 3
	is.renew = func(id string, n int) (time.Duration, error) {
		if fails > 0 {
			fails--
			return 0, &keystore.Error{Upstream: "dyn", Item: id, Err: keystore.ErrUnreachable}
		}
		return 200 * time.Millisecond, nil
	}
	f := setup(t, is, nil)
	v1, _ := f.waitLease(t, "c1", "payments/db")
	_, id1 := f.m.Peek("c1", "payments/db")
	eventually(t, "renewed after the failures", func() bool {
		is.mu.Lock()
		defer is.mu.Unlock()
		return is.renews[id1] >= 5
	})
	if v, _ := f.m.Peek("c1", "payments/db"); v != v1 {
		t.Fatal("a renewal that failed for a while replaced the lease")
	}
	if n := f.aud.count("lease.renew", audit.ResultError); n != 1 {
		t.Fatalf("%d lease.renew failures audited, want 1 for the episode", n)
	}
}

func TestIssueRetriedWithBackoff(t *testing.T) {
	is := newIssuer(time.Hour)
	is.issueErrs = []error{keystore.ErrUnreachable, keystore.ErrUnreachable, keystore.ErrAccessLost}
	f := setup(t, is, nil)
	if _, _, ok := f.m.Lease(holder("c1"), "payments/db"); ok {
		t.Fatal("lease before issue")
	}
	eventually(t, "degraded", func() bool {
		return f.m.LinkState(catalog.Link{Upstream: "dyn"}).State == "degraded" && len(f.m.Degraded()) == 1
	})
	if st := f.m.Status(); len(st) != 1 || st[0].Name != "dyn" || st[0].Linked != 1 {
		t.Fatalf("%+v", st)
	}
	f.waitLease(t, "c1", "payments/db")
	if n := f.aud.count("lease.issue", audit.ResultError); n != 1 {
		t.Fatalf("%d lease.issue failures audited, want 1", n)
	}
	if st := f.m.LinkState(catalog.Link{Upstream: "dyn"}); st.State != "ok" || len(f.m.Degraded()) != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestRevokeRetried(t *testing.T) {
	is := newIssuer(time.Hour)
	is.revokeErr = []error{keystore.ErrUnreachable, keystore.ErrUnreachable}
	f := setup(t, is, nil)
	f.waitLease(t, "c1", "payments/db")
	_, id := f.m.Peek("c1", "payments/db")
	f.m.Release("c1", "payments/db", broker.ReleaseUngranted)
	eventually(t, "revoked after retries", func() bool { return is.isRevoked(id) })
	eventually(t, "audited", func() bool { return f.aud.find("lease.revoke", audit.ResultOK, id) != nil })
	if ev := f.aud.find("lease.revoke", audit.ResultOK, id); ev.Details["attempts"] != "3" {
		t.Fatalf("%+v", ev)
	}
}

// Secrets linked to keys of one item share the container's lease, so that
// username and password always match; the lease goes with the last one.
func TestKeysShareALease(t *testing.T) {
	is := newIssuer(time.Hour)
	f := setup(t, is, nil)
	f.cat.set("db/user", "dyn:database/creds/app#username")
	f.cat.set("db/pass", "dyn:database/creds/app#password")
	f.m.Changed(catalog.Change{Kind: catalog.SecretPut, Secret: "db/user"})
	f.m.Changed(catalog.Change{Kind: catalog.SecretPut, Secret: "db/pass"})
	_, user := f.waitLease(t, "c1", "db/user")
	_, pass := f.waitLease(t, "c1", "db/pass")
	if strings.TrimPrefix(user, "user-") != strings.TrimPrefix(pass, "SECRET-pw-") {
		t.Fatalf("username and password from different leases: %q %q", user, strings.Repeat("*", len(pass)))
	}
	_, id := f.m.Peek("c1", "db/user")
	f.m.Release("c1", "db/user", broker.ReleaseUngranted)
	time.Sleep(50 * time.Millisecond)
	if is.isRevoked(id) {
		t.Fatal("revoked while another secret of the container uses it")
	}
	f.m.Release("c1", "db/pass", broker.ReleaseUngranted)
	eventually(t, "revoked", func() bool { return is.isRevoked(id) })
}

// Unlinking (or deleting) the secret revokes every container's lease.
func TestUnlinkRevokesAll(t *testing.T) {
	is := newIssuer(time.Hour)
	f := setup(t, is, nil)
	f.waitLease(t, "c1", "payments/db")
	f.waitLease(t, "c2", "payments/db")
	f.cat.set("payments/db", "")
	f.m.Changed(catalog.Change{Kind: catalog.SecretDeleted, Secret: "payments/db"})
	if f.m.Dynamic("payments/db") {
		t.Fatal("still dynamic")
	}
	eventually(t, "all revoked", func() bool { return is.liveCount() == 0 })
	if ev := f.aud.find("lease.revoke", audit.ResultOK, ""); ev.Details["reason"] != "secret unlinked or deleted" {
		t.Fatalf("%+v", ev)
	}
}

// An agent cannot mint credentials without bound: its containers hold at
// most MaxPerAgent leases, and the refusal is audited once.
func TestMaxPerAgent(t *testing.T) {
	is := newIssuer(time.Hour)
	f := setup(t, is, func(c *Config) { c.MaxPerAgent = 2 })
	f.waitLease(t, "c1", "payments/db")
	f.waitLease(t, "c2", "payments/db")
	for range 10 {
		if _, _, ok := f.m.Lease(holder("c3"), "payments/db"); ok {
			t.Fatal("a third lease for the agent")
		}
	}
	eventually(t, "refusal audited", func() bool { return f.aud.count("lease.issue", audit.ResultDenied) == 1 })
	if f.m.Holding() != 2 {
		t.Fatal(f.m.Holding())
	}
	f.m.Release("c1", "payments/db", broker.ReleaseStopped)
	f.waitLease(t, "c3", "payments/db")
}

// Stopping the server revokes nothing: running containers keep working
// until their leases' TTL.
func TestCloseRevokesNothing(t *testing.T) {
	is := newIssuer(time.Hour)
	f := setup(t, is, nil)
	f.waitLease(t, "c1", "payments/db")
	if err := f.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if is.liveCount() != 1 {
		t.Fatal("close revoked a lease")
	}
	if _, _, ok := f.m.Lease(holder("c2"), "payments/db"); ok {
		t.Fatal("lease after close")
	}
}

func TestProbe(t *testing.T) {
	is := newIssuer(time.Hour)
	f := setup(t, is, nil)
	lk, err := f.m.Probe(context.Background(), "dyn:database/creds/app#password")
	if err != nil || !lk.Dynamic || lk.Item != "database/creds/app" || lk.Key != "password" {
		t.Fatalf("%+v %v", lk, err)
	}
	if is.liveCount() != 0 {
		t.Fatal("the probe's lease was not revoked")
	}
	for from, want := range map[string]error{
		"dyn:database/creds/app#nokey": keystore.ErrNoKey,
		"dyn:secret/data/x":            keystore.ErrInvalidRef,
		"other:database/creds/app":     keystore.ErrInvalidRef,
	} {
		_, err := f.m.Probe(context.Background(), from)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", from, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET-pw") {
			t.Errorf("value in error")
		}
	}
	is.issueErrs = []error{keystore.ErrAccessLost}
	if _, err := f.m.Probe(context.Background(), "dyn:database/creds/app"); !errors.Is(err, keystore.ErrAccessLost) {
		t.Fatal(err)
	}
	if is.liveCount() != 0 {
		t.Fatal("a probe left a lease")
	}
	if !f.m.Handles("dyn:database/creds/app") || f.m.Handles("vault:x") {
		t.Fatal("Handles")
	}
}

// After a restart the leases of the previous run (remembered by id in the
// store, never with their credentials) are revoked: once their container
// holds a new lease, or after LeftoverGrace if it does not come back.
func TestLeftoversRevokedAfterRestart(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	is := newIssuer(time.Hour)
	tweak := func(c *Config) { c.Store = st; c.LeftoverGrace = 300 * time.Millisecond }
	f1 := setup(t, is, tweak)
	f1.waitLease(t, "c1", "payments/db")
	f1.waitLease(t, "c2", "payments/db")
	_, old1 := f1.m.Peek("c1", "payments/db")
	_, old2 := f1.m.Peek("c2", "payments/db")
	if err := f1.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if is.liveCount() != 2 {
		t.Fatal("close revoked")
	}
	var raw []string
	st.View(context.Background(), func(tx store.Tx) error {
		return tx.List("lease/", func(k string, v []byte) error { raw = append(raw, string(v)); return nil })
	})
	if len(raw) != 2 || strings.Contains(strings.Join(raw, ""), "SECRET-pw") {
		t.Fatalf("lease records: %v", raw)
	}

	// A server sharing the store under another name leaves them alone.
	other := setup(t, is, func(c *Config) { tweak(c); c.Owner = "server-b" })
	time.Sleep(400 * time.Millisecond) // past LeftoverGrace
	if is.isRevoked(old1) || is.isRevoked(old2) {
		t.Fatal("another server revoked this one's leases")
	}
	other.m.Close(context.Background())

	f2 := setup(t, is, tweak) // the restarted server
	f2.waitLease(t, "c1", "payments/db")
	_, new1 := f2.m.Peek("c1", "payments/db")
	eventually(t, "c1's old lease revoked once it has a new one", func() bool { return is.isRevoked(old1) })
	eventually(t, "c2's lease revoked: c2 did not come back", func() bool { return is.isRevoked(old2) })
	if is.isRevoked(new1) {
		t.Fatal("the new lease was revoked")
	}
	eventually(t, "audited", func() bool {
		e := f2.aud.find("lease.revoke", audit.ResultOK, old1)
		return e != nil && e.Details["reason"] == "server restarted; replaced by lease "+new1 && e.Details["container_id"] == "c1"
	})
	eventually(t, "audited", func() bool {
		e := f2.aud.find("lease.revoke", audit.ResultOK, old2)
		return e != nil && e.Details["reason"] == "server restarted; its container did not come back"
	})
	raw = nil
	st.View(context.Background(), func(tx store.Tx) error {
		return tx.List("lease/", func(k string, v []byte) error { raw = append(raw, k); return nil })
	})
	if len(raw) != 1 || raw[0] != "lease/"+new1 {
		t.Fatalf("records after: %v", raw)
	}
}
