package security_test

import (
	"testing"
	"time"

	"coffer/test/security/hostile"
)

// Old certificates: after two renewals, the first certificate opens no
// stream and renews nothing (the one before the current still works, so
// that an agent that crashed mid-renewal can come back).
func TestOldCertificatesAreRefused(t *testing.T) {
	srv, admin := start(t)
	a := enroll(t, srv, admin, "renewer")
	first := a.Cert
	a.Renew(t)
	a.Renew(t)
	previous := a.Old[1]

	for name, c := range map[string]struct {
		opt  hostile.Option
		open bool
	}{"current": {hostile.WithCert(a.Cert), true}, "previous": {hostile.WithCert(previous), true}, "first": {hostile.WithCert(first), false}} {
		s := a.Dial(t, c.opt)
		if ended, err := s.Closed(500 * time.Millisecond); ended == c.open {
			t.Errorf("%s certificate: stream ended %v (%v), want open %v", name, ended, err, c.open)
		}
	}
	if _, err := a.RenewWith(first); err == nil {
		t.Fatal("a certificate two renewals old was renewed")
	}
	// A removed agent's current certificate renews nothing either.
	admin.Must(t, "DELETE", "/v1/agents/renewer", nil, nil)
	if _, err := a.RenewWith(a.Cert); err == nil {
		t.Fatal("a removed agent's certificate was renewed")
	}
}
