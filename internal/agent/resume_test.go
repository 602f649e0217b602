package agent

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
)

// After a renewal the agent offers no ticket of its old certificate: a
// resumed session would present the old certificate, which the server
// soon stops taking (and a fleet would never switch to its new ones).
func TestSessionCacheIsPerCertificate(t *testing.T) {
	cur := &x509.Certificate{SerialNumber: big.NewInt(1)}
	c := newSessionCache(func() *x509.Certificate { return cur })
	ticket := &tls.ClientSessionState{}
	c.Put("server-a", ticket)
	if got, ok := c.Get("server-a"); !ok || got != ticket {
		t.Fatal("the ticket of the current certificate is not offered")
	}
	if _, ok := c.Get("server-b"); ok {
		t.Fatal("a ticket offered to another server name")
	}
	cur = &x509.Certificate{SerialNumber: big.NewInt(2)} // renewed
	if _, ok := c.Get("server-a"); ok {
		t.Fatal("a ticket of the old certificate is offered after a renewal")
	}
}
