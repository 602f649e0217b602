package identity

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, created, err := LoadOrCreateCA(t.TempDir())
	if err != nil || !created {
		t.Fatalf("LoadOrCreateCA: created=%v err=%v", created, err)
	}
	return ca
}

// issueAgent makes an agent key and has ca sign it as if at now.
func issueAgent(t testing.TB, ca *CA, name string, ttl time.Duration, now time.Time) tls.Certificate {
	t.Helper()
	key, err := NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.signAgentCSR(csr, name, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
