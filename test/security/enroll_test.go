package security_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"coffer/test/security/hostile"
)

// Enrolling under a name that is already enrolled (names default to the
// host name, so a thief can guess them) used to replace the real agent's
// certificates and lock the real host out of rotations and revocations.
// Now it is refused with 409 before the join token is spent, and the real
// agent keeps its stream and its deliveries.
func TestEnrollingAnExistingNameCannotLockOutTheRealAgent(t *testing.T) {
	srv, admin := start(t)
	real := enroll(t, srv, admin, "web-1")
	admin.PutSecret(t, "shop/db", []byte("v1-"+t.Name()))
	admin.Bind(t, "shop-db", map[string]any{"secret": "shop/db", "selector": "app=shop"})
	s := real.Dial(t)
	if err := s.Report(hostile.Container("c-real", map[string]string{"app": "shop"})); err != nil {
		t.Fatal(err)
	}
	s.WaitFiles("c-real", "db=shop/db@1")

	join := admin.JoinToken(t)
	_, err := hostile.EnrollErr(srv, "web-1", join)
	if err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("enrolling an existing name: %v, want HTTP 409", err)
	}
	// The real agent is untouched: its stream stays open and a rotation
	// still reaches it.
	if ended, err := s.Closed(300 * time.Millisecond); ended {
		t.Fatalf("the real agent's stream was closed: %v", err)
	}
	admin.PutSecret(t, "shop/db", []byte("v2-"+t.Name()))
	s.WaitFiles("c-real", "db=shop/db@2")
	// The join token was not spent: it still enrolls another name.
	if _, err := hostile.EnrollErr(srv, "web-2", join); err != nil {
		t.Fatalf("the refused join token no longer works: %v", err)
	}
}

// A stolen previous certificate cannot renew once the real agent has used
// its newest one, so a thief cannot mint itself a fresh certificate (nor
// evict the real agent's) from a key it copied earlier.
func TestStolenPreviousCertificateCannotRenew(t *testing.T) {
	srv, admin := start(t)
	a := enroll(t, srv, admin, "renewer")
	stolen := a.Cert
	a.Renew(t)
	// The real agent connects with its newest certificate.
	s := a.Dial(t)
	if ended, err := s.Closed(300 * time.Millisecond); ended {
		t.Fatalf("newest certificate refused: %v", err)
	}
	if _, err := a.RenewWith(stolen); err == nil {
		t.Fatal("the previous certificate renewed after the newest was used")
	}
	// The real agent is not locked out: it still renews and connects.
	a.Renew(t)
	s2 := a.Dial(t)
	if ended, err := s2.Closed(300 * time.Millisecond); ended {
		t.Fatalf("the real agent was locked out: %v", err)
	}
}

// Renewing while an admin removes the agent: once `agent rm` has answered,
// no certificate the agent holds or was just given opens a stream or renews.
func TestRenewRacingRemovalLeavesNothing(t *testing.T) {
	srv, admin := start(t)
	for round := range 10 {
		a := enroll(t, srv, admin, "racer")
		done := make(chan tlsResult, 1)
		go func() {
			c, err := a.RenewWith(a.Cert)
			done <- tlsResult{c.Certificate != nil, err, c}
		}()
		admin.Must(t, "DELETE", "/v1/agents/racer", nil, nil)
		r := <-done
		certs := []hostile.Option{hostile.WithCert(a.Cert)}
		if r.ok {
			certs = append(certs, hostile.WithCert(r.cert))
		}
		for i, c := range certs {
			s := a.Dial(t, c)
			if ended, _ := s.Closed(2 * time.Second); !ended {
				t.Fatalf("round %d: certificate %d of a removed agent still opens a stream", round, i)
			}
		}
		if _, err := a.RenewWith(a.Cert); err == nil {
			t.Fatalf("round %d: a removed agent renewed", round)
		}
		if _, ok := admin.Agents(t)["racer"]; ok {
			t.Fatalf("round %d: the removed agent is listed again", round)
		}
	}
}

type tlsResult struct {
	ok   bool
	err  error
	cert tls.Certificate
}
