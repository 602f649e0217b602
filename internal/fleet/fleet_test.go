package fleet

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"coffer/internal/identity"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

type rig struct {
	t  *testing.T
	st *bolt.Backend
	ca *identity.CA
	f  *Fleet
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, st: st, ca: ca}
	r.f = r.reopen()
	return r
}

// reopen loads a new Fleet from the store, as a restarted server does.
func (r *rig) reopen() *Fleet {
	r.t.Helper()
	f, err := Open(context.Background(), Config{Store: r.st, CA: r.ca})
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

func (r *rig) csr(name string) []byte {
	r.t.Helper()
	key, err := identity.NewAgentKey()
	if err != nil {
		r.t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, name)
	if err != nil {
		r.t.Fatal(err)
	}
	return csr
}

func parse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func admitWith(adm Admission) func(context.Context) (Admission, error) {
	return func(context.Context) (Admission, error) { return adm, nil }
}

// enroll enrolls name and returns its first certificate.
func (r *rig) enroll(name string, adm Admission) *x509.Certificate {
	r.t.Helper()
	der, err := r.f.Enroll(context.Background(), name, r.csr(name), "127.0.0.1", admitWith(adm))
	if err != nil {
		r.t.Fatalf("enroll %s: %v", name, err)
	}
	return parse(r.t, der)
}

func (r *rig) renew(f *Fleet, name string, with *x509.Certificate) (*x509.Certificate, error) {
	der, err := f.Renew(context.Background(), name, serialOf(with), r.csr(name))
	if err != nil {
		return nil, err
	}
	return parse(r.t, der), nil
}

// stored reports whether the store holds a record for name.
func (r *rig) stored(name string) bool {
	r.t.Helper()
	found := false
	err := r.st.View(context.Background(), func(tx store.Tx) error {
		_, err := tx.Get(agentKey(name))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return found
}

// TestRenewRemoveRace: whatever the interleaving of a renewal and a
// removal, once Remove has returned no certificate of the agent verifies
// and no record is left in the store or in memory. (Before the fix a
// renewal racing with the removal wrote the agent back.)
func TestRenewRemoveRace(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	const rounds = 60
	resurrected := 0
	for i := range rounds {
		name := "node-1"
		first := r.enroll(name, Admission{})
		if _, err := r.f.Verify(first); err != nil {
			t.Fatal(err)
		}
		csr := r.csr(name)
		var renewed []byte
		var renewErr, removeErr error
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			renewed, renewErr = r.f.Renew(ctx, name, serialOf(first), csr)
		})
		wg.Go(func() {
			<-start
			removeErr = r.f.Remove(ctx, name)
		})
		close(start)
		wg.Wait()
		if removeErr != nil {
			t.Fatalf("round %d: Remove = %v", i, removeErr)
		}
		bad := false
		if renewErr == nil {
			if _, err := r.f.Verify(parse(t, renewed)); err == nil {
				t.Errorf("round %d: the renewed certificate verifies after Remove", i)
				bad = true
			}
		} else if !errors.Is(renewErr, ErrUnknownAgent) {
			t.Fatalf("round %d: Renew = %v", i, renewErr)
		}
		if _, err := r.f.Verify(first); err == nil {
			t.Errorf("round %d: the first certificate verifies after Remove", i)
			bad = true
		}
		if _, _, ok := r.f.Host(name); ok || len(r.f.List()) != 0 {
			t.Errorf("round %d: the agent is still in memory", i)
			bad = true
		}
		if r.stored(name) {
			t.Errorf("round %d: the agent is still in the store", i)
			bad = true
		}
		if bad {
			resurrected++
			// Clean up so that the next round starts from nothing.
			r.f.Remove(ctx, name)
		}
	}
	if resurrected > 0 {
		t.Fatalf("the agent outlived Remove in %d of %d rounds", resurrected, rounds)
	}
	if n := len(r.reopen().List()); n != 0 {
		t.Fatalf("after a restart the fleet holds %d agents", n)
	}
}

func TestRemove(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.f.Remove(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove(unknown) = %v", err)
	}
	c := r.enroll("node-1", Admission{Scope: "payments/"})
	refuse := func(a Agent) bool { return a.Scope == "other/" }
	if err := r.f.RemoveIf(ctx, "node-1", refuse); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RemoveIf(refused) = %v, want ErrNotFound", err)
	}
	if _, err := r.f.Verify(c); err != nil || !r.stored("node-1") {
		t.Fatalf("a refused RemoveIf removed the agent: %v", err)
	}
	if err := r.f.RemoveIf(ctx, "node-1", func(a Agent) bool { return a.Scope == "payments/" }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.f.Verify(c); !errors.Is(err, ErrUnknownAgent) || r.stored("node-1") {
		t.Fatalf("removed agent: Verify = %v, stored %v", err, r.stored("node-1"))
	}
	if _, err := r.renew(r.f, "node-1", c); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("removed agent renewed: %v", err)
	}
}

// TestEnrollRefusesAnExistingName: a second enrollment of a name fails
// before the join token is spent and leaves the enrolled agent alone.
// (Before the fix it replaced the agent's certificates.)
func TestEnrollRefusesAnExistingName(t *testing.T) {
	r := newRig(t)
	first := r.enroll("node-1", Admission{Labels: map[string]string{"env": "prod"}})
	spent := false
	_, err := r.f.Enroll(context.Background(), "node-1", r.csr("node-1"), "10.0.0.9", func(context.Context) (Admission, error) {
		spent = true
		return Admission{}, nil
	})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Enroll = %v, want ErrExists", err)
	}
	if spent {
		t.Fatal("the join token was spent on a refused enrollment")
	}
	if _, err := r.f.Verify(first); err != nil {
		t.Fatalf("the enrolled agent was locked out: %v", err)
	}
	if ls, _, _ := r.f.Host("node-1"); ls["env"] != "prod" {
		t.Fatalf("labels changed: %v", ls)
	}
}

// TestConcurrentEnrollmentsOfOneName: of many enrollments of one new name
// at once, one wins; the others fail with ErrExists without spending their
// tokens.
func TestConcurrentEnrollmentsOfOneName(t *testing.T) {
	r := newRig(t)
	const n = 12
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i] = r.csr("node-1")
	}
	var ok, admitted atomic.Int32
	var certs sync.Map
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			der, err := r.f.Enroll(context.Background(), "node-1", csrs[i], "", func(context.Context) (Admission, error) {
				admitted.Add(1)
				return Admission{}, nil
			})
			switch {
			case err == nil:
				ok.Add(1)
				certs.Store(i, der)
			case !errors.Is(err, ErrExists):
				t.Errorf("Enroll = %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || admitted.Load() != 1 {
		t.Fatalf("%d enrollments succeeded, %d tokens spent; want 1 and 1", ok.Load(), admitted.Load())
	}
	certs.Range(func(_, v any) bool {
		if _, err := r.f.Verify(parse(t, v.([]byte))); err != nil {
			t.Errorf("the winner's certificate: %v", err)
		}
		return true
	})
}

func TestEnrollChecksBeforeAdmitting(t *testing.T) {
	r := newRig(t)
	spent := 0
	admit := func(context.Context) (Admission, error) { spent++; return Admission{}, nil }
	if _, err := r.f.Enroll(context.Background(), "Bad Name", r.csr("node-1"), "", admit); !errors.Is(err, identity.ErrInvalidAgentName) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := r.f.Enroll(context.Background(), "node-1", []byte("garbage"), "", admit); !errors.Is(err, identity.ErrBadCSR) {
		t.Fatalf("bad csr: %v", err)
	}
	if spent != 0 {
		t.Fatalf("a bad request spent %d join tokens", spent)
	}
	refused := errors.New("bad token")
	if _, err := r.f.Enroll(context.Background(), "node-1", r.csr("node-1"), "", func(context.Context) (Admission, error) {
		return Admission{}, refused
	}); !errors.Is(err, refused) {
		t.Fatalf("admit error = %v", err)
	}
	if _, _, ok := r.f.Host("node-1"); ok || r.stored("node-1") {
		t.Fatal("a refused admission recorded the agent")
	}
	// Labels are checked again here, whatever the token said.
	if _, err := r.f.Enroll(context.Background(), "node-1", r.csr("node-1"), "", admitWith(Admission{Labels: map[string]string{"bad key!": "x"}})); err == nil {
		t.Fatal("bad labels enrolled")
	}
	if _, _, ok := r.f.Host("node-1"); ok {
		t.Fatal("bad labels recorded")
	}
}

func TestEnrollRecordsLabelsAndScope(t *testing.T) {
	r := newRig(t)
	labels := map[string]string{"env": "prod", "zone": "eu-1"}
	c := r.enroll("node-1", Admission{Labels: labels, Scope: "payments/"})
	labels["env"] = "changed-by-caller"
	want := map[string]string{"env": "prod", "zone": "eu-1"}
	if got, err := identity.AgentLabels(c); err != nil || !maps.Equal(got, want) {
		t.Fatalf("certificate labels = %v, %v", got, err)
	}
	for i, f := range []*Fleet{r.f, r.reopen()} {
		ls, scope, ok := f.Host("node-1")
		if !ok || !maps.Equal(ls, want) || scope != "payments/" {
			t.Fatalf("fleet %d: Host = %v %q %v", i, ls, scope, ok)
		}
		ls["env"] = "changed-by-caller"
		if again, _, _ := f.Host("node-1"); again["env"] != "prod" {
			t.Fatal("Host returned the record's own map")
		}
		if a := f.List(); len(a) != 1 || a[0].Scope != "payments/" || !maps.Equal(a[0].Labels, want) {
			t.Fatalf("fleet %d: List = %+v", i, a)
		}
		if _, err := f.Verify(c); err != nil {
			t.Fatalf("fleet %d: Verify = %v", i, err)
		}
	}
	r.f.Seen("node-1", "127.0.0.1:4242")
	if got, none := r.f.Address("node-1"), r.f.Address("node-2"); got != "127.0.0.1:4242" || none != "" {
		t.Fatalf("Address = %q, of an unknown agent %q", got, none)
	}
}

// labelsCSR is a request that asks for labels of its own.
func (r *rig) labelsCSR(name string, labels map[string]string) []byte {
	r.t.Helper()
	// The CA's own encoding, taken from a certificate it signed.
	der, err := r.ca.SignAgent(r.csr(name), identity.AgentCertOptions{Name: name, Labels: labels})
	if err != nil {
		r.t.Fatal(err)
	}
	var ext pkix.Extension
	for _, e := range parse(r.t, der).Extensions {
		if e.Id.String() == "2.5.29.9" {
			ext = e
		}
	}
	key, _ := identity.NewAgentKey()
	u, _ := url.Parse("coffer://agent/" + name)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "coffer-agent:" + name}, URIs: []*url.URL{u}, ExtraExtensions: []pkix.Extension{ext},
	}, key)
	if err != nil {
		r.t.Fatal(err)
	}
	return csr
}

// TestRenewalUsesTheRecordsLabels: a renewal is signed with the labels of
// the fleet record, never with labels the agent asks for.
func TestRenewalUsesTheRecordsLabels(t *testing.T) {
	r := newRig(t)
	want := map[string]string{"env": "staging"}
	c := r.enroll("node-1", Admission{Labels: want})
	r.f.Verify(c)
	der, err := r.f.Renew(context.Background(), "node-1", serialOf(c), r.labelsCSR("node-1", map[string]string{"env": "prod", "team": "payments"}))
	if err != nil {
		t.Fatal(err)
	}
	renewed := parse(t, der)
	if got, err := identity.AgentLabels(renewed); err != nil || !maps.Equal(got, want) {
		t.Fatalf("renewed certificate labels = %v, %v; want %v", got, err, want)
	}
	if _, err := r.f.Verify(renewed); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRefusesOtherLabels: a certificate whose labels differ from the
// record is refused even with a serial the fleet issued.
func TestVerifyRefusesOtherLabels(t *testing.T) {
	r := newRig(t)
	r.enroll("node-1", Admission{Labels: map[string]string{"env": "dev"}})
	for _, ls := range []map[string]string{{"env": "prod"}, {"env": "dev", "extra": "x"}, nil} {
		der, err := r.ca.SignAgent(r.csr("node-1"), identity.AgentCertOptions{Name: "node-1", Labels: ls})
		if err != nil {
			t.Fatal(err)
		}
		forged := parse(t, der)
		r.f.mu.Lock()
		a := r.f.agents["node-1"]
		a.Serials = append(a.Serials, serialOf(forged))
		r.f.mu.Unlock()
		if _, err := r.f.Verify(forged); !errors.Is(err, ErrUnknownAgent) {
			t.Errorf("labels %v accepted for an agent with env=dev: %v", ls, err)
		}
	}
	// And an unlabelled agent refuses a labelled certificate.
	r.enroll("node-2", Admission{})
	der, _ := r.ca.SignAgent(r.csr("node-2"), identity.AgentCertOptions{Name: "node-2", Labels: map[string]string{"env": "prod"}})
	forged := parse(t, der)
	r.f.mu.Lock()
	r.f.agents["node-2"].Serials = append(r.f.agents["node-2"].Serials, serialOf(forged))
	r.f.mu.Unlock()
	if _, err := r.f.Verify(forged); !errors.Is(err, ErrUnknownAgent) {
		t.Errorf("labelled certificate accepted for an unlabelled agent: %v", err)
	}
}

// TestRenewalRules: only the newest certificate renews; the previous one
// may renew while the newest has never been used (the answer was lost), and
// the newest is then replaced; once the newest is used, the previous one
// still connects but never renews, across restarts too. (Before the fix a
// renewal with the previous certificate always succeeded and evicted the
// newest one.)
func TestRenewalRules(t *testing.T) {
	r := newRig(t)
	c0 := r.enroll("node-1", Admission{Labels: map[string]string{"env": "prod"}})
	if _, err := r.f.Verify(c0); err != nil {
		t.Fatal(err)
	}
	c1, err := r.renew(r.f, "node-1", c0)
	if err != nil {
		t.Fatal(err)
	}

	// Lost answer: c1 never presented, c0 renews again and c1 is replaced.
	c2, err := r.renew(r.f, "node-1", c0)
	if err != nil {
		t.Fatalf("previous certificate, newest never used: %v", err)
	}
	if _, err := r.f.Verify(c1); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("the replaced, never used certificate still verifies: %v", err)
	}

	// c2 is used: from now on c0 connects but cannot renew.
	for _, c := range []*x509.Certificate{c2, c0} {
		if _, err := r.f.Verify(c); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	for i, f := range []*Fleet{r.f, r.reopen()} {
		if _, err := r.renew(f, "node-1", c0); !errors.Is(err, ErrStaleCertificate) {
			t.Fatalf("fleet %d: stale certificate renewed: %v", i, err)
		}
		if _, err := f.Verify(c2); err != nil {
			t.Fatalf("fleet %d: a refused renewal evicted the newest certificate: %v", i, err)
		}
		if _, err := f.Verify(c0); err != nil {
			t.Fatalf("fleet %d: the previous certificate no longer connects: %v", i, err)
		}
	}

	// The newest renews; then c0 is two generations old and refused.
	c3, err := r.renew(r.f, "node-1", c2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.f.Verify(c0); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("a certificate two renewals old verifies: %v", err)
	}
	if _, err := r.renew(r.f, "node-1", c0); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("a certificate two renewals old renews: %v", err)
	}
	for _, c := range []*x509.Certificate{c3, c2} {
		if _, err := r.f.Verify(c); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStolenPreviousCertificateRace: the real agent presents its newest
// certificate while a thief renews with the previous one. Either the thief
// wins and the newest (never used before) is refused, or the agent wins and
// the thief is refused; never both.
func TestStolenPreviousCertificateRace(t *testing.T) {
	r := newRig(t)
	for i := range 30 {
		name := fmt.Sprintf("node-%d", i)
		c0 := r.enroll(name, Admission{})
		r.f.Verify(c0)
		c1, err := r.renew(r.f, name, c0)
		if err != nil {
			t.Fatal(err)
		}
		csr := r.csr(name)
		var verifyErr, renewErr error
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-start; _, verifyErr = r.f.Verify(c1) })
		wg.Go(func() { <-start; _, renewErr = r.f.Renew(context.Background(), name, serialOf(c0), csr) })
		close(start)
		wg.Wait()
		if (verifyErr == nil) == (renewErr == nil) {
			t.Fatalf("round %d: Verify(newest) = %v, Renew(previous) = %v: want exactly one to succeed", i, verifyErr, renewErr)
		}
	}
}
