package etcd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"sync"
	"testing"

	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/etcdtest"
	"coffer/internal/fleet"
	"coffer/internal/identity"
)

// A join token is single-use across servers: server B's cache still holds
// it unused after A spent it (B has no watch here), and the store's
// compare-and-swap refuses B. Before, B marked it used in its cache and
// wrote the record blindly: the token enrolled two agents.
func TestJoinTokenSingleUseAcrossServers(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	ctx := context.Background()
	a, err := authn.NewTokens(ctx, open(t, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	plain, _, err := a.Create(ctx, authn.CreateOptions{Role: authz.Agent, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := authn.NewTokens(ctx, open(t, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ConsumeJoin(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ConsumeJoin(ctx, plain); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Fatalf("second use on another server = %v, want ErrUnauthenticated", err)
	}
}

// Of two servers enrolling one agent name at once, one wins; the other
// gets ErrExists, whatever their caches said.
func TestEnrollOneNameOnTwoServers(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	ctx := context.Background()
	ca, _, err := identity.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var fleets []*fleet.Fleet
	for range 2 {
		f, err := fleet.Open(ctx, fleet.Config{Store: open(t, c, nil), CA: ca})
		if err != nil {
			t.Fatal(err)
		}
		fleets = append(fleets, f)
	}
	for round := range 5 {
		name := "node-" + string(rune('a'+round))
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, f := range fleets {
			wg.Go(func() {
				_, errs[i] = f.Enroll(ctx, name, csr(t), "", func(context.Context) (fleet.Admission, error) { return fleet.Admission{}, nil })
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, fleet.ErrExists):
				t.Fatal(err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d servers enrolled %s", round, won, name)
		}
	}
}

func csr(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// An agent removed on server A stays removed: server B, whose cache still
// holds it, cannot renew its certificate or record its use, which wrote the
// record back blindly before and brought the agent back everywhere.
func TestRemovedAgentCannotBeRenewedBackOnAnotherServer(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	ctx := context.Background()
	ca, _, err := identity.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := fleet.Open(ctx, fleet.Config{Store: open(t, c, nil), CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	der, err := a.Enroll(ctx, "node-1", csr(t), "", func(context.Context) (fleet.Admission, error) { return fleet.Admission{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	bStore := open(t, c, nil)
	b, err := fleet.Open(ctx, fleet.Config{Store: bStore, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	serial := fmt.Sprintf("%x", cert.SerialNumber.Bytes())
	if _, err := b.Renew(ctx, "node-1", serial, csr(t)); !errors.Is(err, fleet.ErrUnknownAgent) {
		t.Fatalf("renewal on B of an agent removed on A = %v, want ErrUnknownAgent", err)
	}
	if _, err := b.Verify(cert); err == nil {
		t.Fatal("B verified (and recorded the use of) a certificate of an agent removed on A")
	}
	if again, err := fleet.Open(ctx, fleet.Config{Store: bStore, CA: ca}); err != nil || len(again.List()) != 0 {
		t.Fatalf("the removed agent is back in the store: %v, %v", again.List(), err)
	}
}
