package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestValidateAgentName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"node-1", true}, {"a", true}, {"web.eu-west_2", true}, {"0", true},
		{strings.Repeat("a", MaxAgentNameLen), true},
		{"", false}, {strings.Repeat("a", MaxAgentNameLen+1), false},
		{"Node", false}, {"-a", false}, {"a-", false}, {"a/b", false}, {"a b", false},
		{"..", false}, {"a%2fb", false}, {"ä", false}, {"a?x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAgentName(tc.name)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateAgentName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidAgentName) {
				t.Fatalf("err = %v, want ErrInvalidAgentName", err)
			}
		})
	}
}

func TestAgentNameRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	for _, name := range []string{"node-1", "a", "host.example_1"} {
		c := issueAgent(t, ca, name, time.Hour, time.Now())
		got, err := AgentName(c.Leaf)
		if err != nil || got != name {
			t.Errorf("AgentName = %q, %v; want %q", got, err, name)
		}
	}
}

func TestAgentNameRejectsOtherCerts(t *testing.T) {
	ca := newTestCA(t)
	server, err := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	agent := issueAgent(t, ca, "node-1", time.Hour, time.Now()).Leaf
	mod := func(f func(c *x509.Certificate)) *x509.Certificate {
		c := *agent
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"nil", nil},
		{"CA", ca.Cert},
		{"server", server.Leaf},
		{"no URI", mod(func(c *x509.Certificate) { c.URIs = nil })},
		{"two URIs", mod(func(c *x509.Certificate) { c.URIs = append(c.URIs, agentURI("other")) })},
		{"other scheme", mod(func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "spiffe", Host: "agent", Path: "/node-1"}} })},
		{"other host", mod(func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "coffer", Host: "admin", Path: "/node-1"}} })},
		{"query", mod(func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "coffer", Host: "agent", Path: "/node-1", RawQuery: "x"}}
		})},
		{"CN mismatch", mod(func(c *x509.Certificate) { c.Subject.CommonName = "coffer-agent:other" })},
		{"server usage", mod(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })},
		{"any usage", mod(func(c *x509.Certificate) { c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny) })},
		{"is CA", mod(func(c *x509.Certificate) { c.IsCA = true })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if name, err := AgentName(tc.cert); !errors.Is(err, ErrNotAgentCert) {
				t.Fatalf("AgentName = %q, %v; want ErrNotAgentCert", name, err)
			}
		})
	}
}

func TestPeerAgentName(t *testing.T) {
	ca := newTestCA(t)
	leaf := issueAgent(t, ca, "node-9", time.Hour, time.Now()).Leaf
	if _, err := PeerAgentName(nil); !errors.Is(err, ErrNotAgentCert) {
		t.Errorf("nil state: err = %v", err)
	}
	// Unverified peer certificates are not enough.
	if _, err := PeerAgentName(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); !errors.Is(err, ErrNotAgentCert) {
		t.Errorf("unverified: err = %v", err)
	}
	got, err := PeerAgentName(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}}})
	if err != nil || got != "node-9" {
		t.Errorf("verified: %q, %v", got, err)
	}
}

// FuzzAgentNameFromURI checks that the URI parser accepts exactly the
// canonical URIs agentURI makes.
func FuzzAgentNameFromURI(f *testing.F) {
	for _, s := range []string{"coffer://agent/node-1", "coffer://agent/", "coffer://agent/a/b",
		"coffer://agent/%41", "coffer://x@agent/a", "coffer://agent/a?b#c", "coffer:agent/a", "COFFER://agent/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		name, err := agentNameFromURI(u)
		if err != nil {
			if !errors.Is(err, ErrNotAgentCert) {
				t.Fatalf("err = %v, want ErrNotAgentCert", err)
			}
			return
		}
		if ValidateAgentName(name) != nil {
			t.Fatalf("accepted invalid name %q", name)
		}
		if canon := agentURI(name).String(); canon != u.String() {
			t.Fatalf("accepted %q, canonical form is %q", u.String(), canon)
		}
	})
}
