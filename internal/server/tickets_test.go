package server

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"coffer/internal/identity"
)

// ticketRig is one installation's CA with a server certificate and an
// agent certificate.
type ticketRig struct {
	ca     *identity.CA
	server tls.Certificate
	agent  tls.Certificate
	caPEM  []byte
}

func newTicketRig(t *testing.T) *ticketRig {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, identity.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoadOrIssueServerCert(dir, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.SignAgentCSR(csr, "node-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &ticketRig{ca: ca, server: srv, caPEM: caPEM, agent: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}
}

// serverConfig is a server process's TLS config: a new sealer each time,
// as after a restart; sealer(nil) keeps the default, or adjusts it.
func (r *ticketRig) serverConfig(t *testing.T, ca *identity.CA, adjust func(*ticketSealer)) *tls.Config {
	t.Helper()
	cfg := identity.ServerTLSConfig(r.server, r.ca)
	s, err := newTicketSealer(ca)
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	cfg.WrapSession, cfg.UnwrapSession = s.wrap, s.unwrap
	return cfg
}

// handshake connects a client (cache: its session cache) to a server of
// cfg and returns both sides' connection states, after the client read
// the server's first bytes (and so its session ticket).
func handshake(t *testing.T, cfg *tls.Config, cache tls.ClientSessionCache, r *ticketRig) (client, server tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte("x"))
		done <- result{tc.ConnectionState(), err}
	}()
	ccfg, err := identity.ClientTLSConfig(r.caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &r.agent, nil })
	if err != nil {
		t.Fatal(err)
	}
	ccfg.ServerName = "127.0.0.1"
	ccfg.ClientSessionCache = cache
	c, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	return c.ConnectionState(), res.st
}

// An agent resumes its TLS session with a restarted server, or another
// server of the installation (one CA): no full handshake in a reconnect
// wave. The resumed connection carries the agent's verified certificate,
// so the listener routes it to the agents' gRPC transport and the broker
// checks it as after a full handshake. With Go's default ticket keys
// (random per process) this resumption failed.
func TestSessionTicketsOutliveTheServerProcess(t *testing.T) {
	r := newTicketRig(t)
	cache := tls.NewLRUClientSessionCache(4)
	if c, _ := handshake(t, r.serverConfig(t, r.ca, nil), cache, r); c.DidResume {
		t.Fatal("the first handshake resumed")
	}
	c, s := handshake(t, r.serverConfig(t, r.ca, nil), cache, r) // "restarted"
	if !c.DidResume || !s.DidResume {
		t.Fatalf("a restarted server did not resume the agent's session (client %v, server %v)", c.DidResume, s.DidResume)
	}
	if len(s.VerifiedChains) == 0 || s.VerifiedChains[0][0].SerialNumber.Cmp(r.agent.Leaf.SerialNumber) != 0 {
		t.Fatalf("the resumed connection lost the agent's verified certificate: %d chains", len(s.VerifiedChains))
	}

	// The same with Go's defaults: the ticket dies with the process.
	plain := func() *tls.Config { return identity.ServerTLSConfig(r.server, r.ca) }
	cache = tls.NewLRUClientSessionCache(4)
	handshake(t, plain(), cache, r)
	if c, _ := handshake(t, plain(), cache, r); c.DidResume {
		t.Fatal("Go's default ticket keys resumed across configs: the test proves nothing")
	}
}

// A ticket is taken only from the installation that issued it and within
// ticketDays of its day key; one altered in any byte is not taken, and
// none of this fails the handshake: the agent makes a full one.
func TestSessionTicketsRefused(t *testing.T) {
	r := newTicketRig(t)
	other := newTicketRig(t)
	later := func(d time.Duration) func(*ticketSealer) {
		return func(s *ticketSealer) { s.now = func() time.Time { return time.Now().Add(d) } }
	}
	for _, tc := range []struct {
		name   string
		ca     *identity.CA
		adjust func(*ticketSealer)
		resume bool
	}{
		{"same installation, same day", r.ca, nil, true},
		{"6 days later", r.ca, later(6 * 24 * time.Hour), true},
		{"9 days later", r.ca, later(9 * 24 * time.Hour), false},
		{"ticket from the future", r.ca, later(-48 * time.Hour), false},
		{"another installation's CA", other.ca, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			handshake(t, r.serverConfig(t, r.ca, nil), cache, r)
			c, _ := handshake(t, r.serverConfig(t, tc.ca, tc.adjust), cache, r)
			if c.DidResume != tc.resume {
				t.Fatalf("resumed %v, want %v", c.DidResume, tc.resume)
			}
		})
	}

	// A real ticket, altered.
	var s *ticketSealer
	var ticket []byte
	cfg := r.serverConfig(t, r.ca, func(ts *ticketSealer) { s = ts })
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		b, err := s.wrap(cs, ss)
		ticket = b
		return b, err
	}
	handshake(t, cfg, tls.NewLRUClientSessionCache(4), r)
	if ticket == nil {
		t.Fatal("no ticket issued")
	}
	if ss, err := s.unwrap(ticket, tls.ConnectionState{}); ss == nil || err != nil {
		t.Fatalf("unwrap of a good ticket: %v, %v", ss, err)
	}
	for i := range ticket {
		bad := append([]byte(nil), ticket...)
		bad[i] ^= 1
		if ss, err := s.unwrap(bad, tls.ConnectionState{}); ss != nil || err != nil {
			t.Fatalf("byte %d altered: unwrap gave %v, %v", i, ss, err)
		}
	}
	for _, short := range [][]byte{nil, ticket[:3], ticket[:20]} {
		if ss, err := s.unwrap(short, tls.ConnectionState{}); ss != nil || err != nil {
			t.Fatalf("short ticket (%d bytes): %v, %v", len(short), ss, err)
		}
	}
}

func FuzzTicketUnwrap(f *testing.F) {
	dir := f.TempDir()
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		f.Fatal(err)
	}
	s, err := newTicketSealer(ca)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := s.wrap(tls.ConnectionState{}, &tls.SessionState{})
	f.Add(good)
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s.unwrap(b, tls.ConnectionState{}) // must not panic
	})
}
