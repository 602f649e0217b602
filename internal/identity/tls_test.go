package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS connection over 127.0.0.1 between ServerTLSConfig
// and client, and returns the server's view and both ends' errors.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (st tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
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
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte("ok")) // the client reads it: proves the session works
		done <- result{st: tc.ConnectionState(), err: err}
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		_, err = io.ReadFull(conn, buf) // in TLS 1.3 a refused client cert shows here
		conn.Close()
	}
	r := <-done
	return r.st, r.err, err
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert, err := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := ServerTLSConfig(serverCert, ca)
	agent := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	otherCA := newTestCA(t)
	foreign := issueAgent(t, otherCA, "node-1", time.Hour, time.Now())
	expired := issueAgent(t, ca, "node-1", time.Hour, time.Now().Add(-2*time.Hour))
	notYet := issueAgent(t, ca, "node-1", time.Hour, time.Now().Add(2*time.Hour))
	serverAsClient := serverCert

	clientCfg := func(t *testing.T, caPEM []byte, cert *tls.Certificate) *tls.Config {
		var get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
		if cert != nil {
			get = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		cfg, err := ClientTLSConfig(caPEM, get)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	t.Run("agent certificate", func(t *testing.T) {
		st, serr, cerr := handshake(t, serverCfg, clientCfg(t, ca.CertPEM, &agent))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if st.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", st.Version)
		}
		name, err := PeerAgentName(&st)
		if err != nil || name != "node-1" {
			t.Errorf("PeerAgentName = %q, %v", name, err)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		st, serr, cerr := handshake(t, serverCfg, clientCfg(t, ca.CertPEM, nil))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if len(st.PeerCertificates) != 0 || len(st.VerifiedChains) != 0 {
			t.Error("server sees a client certificate")
		}
		if _, err := PeerAgentName(&st); !errors.Is(err, ErrNotAgentCert) {
			t.Errorf("PeerAgentName: %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		why  string
	}{
		{"certificate from another CA", &foreign, "unknown authority"},
		{"expired agent certificate", &expired, "expired"},
		{"agent certificate not yet valid", &notYet, "not yet valid"},
		{"server certificate as client certificate", &serverAsClient, "key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, serr, cerr := handshake(t, serverCfg, clientCfg(t, ca.CertPEM, tc.cert))
			if serr == nil || cerr == nil {
				t.Fatalf("accepted: server %v, client %v", serr, cerr)
			}
			if !strings.Contains(serr.Error(), tc.why) {
				t.Errorf("server refused with %q, want a reason containing %q", serr, tc.why)
			}
		})
	}
	t.Run("client pins another CA", func(t *testing.T) {
		_, serr, cerr := handshake(t, serverCfg, clientCfg(t, otherCA.CertPEM, &agent))
		if cerr == nil || serr == nil {
			t.Fatalf("client accepted a server of another CA: server %v, client %v", serr, cerr)
		}
	})
	t.Run("TLS 1.2 client", func(t *testing.T) {
		cfg := clientCfg(t, ca.CertPEM, &agent)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, serr, cerr := handshake(t, serverCfg, cfg); serr == nil || cerr == nil {
			t.Fatal("TLS 1.2 accepted")
		}
	})
	t.Run("by host name", func(t *testing.T) {
		cfg := clientCfg(t, ca.CertPEM, &agent)
		cfg.ServerName = "localhost"
		if _, serr, cerr := handshake(t, serverCfg, cfg); serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
	})
}

func TestClientTLSConfig(t *testing.T) {
	ca := newTestCA(t)
	cfg, err := ClientTLSConfig(ca.CertPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.RootCAs == nil || cfg.InsecureSkipVerify {
		t.Errorf("config %+v", cfg)
	}
	leaf := issueAgent(t, ca, "x", time.Hour, time.Now())
	for _, tc := range []struct {
		name string
		pem  []byte
	}{
		{"empty", nil},
		{"garbage", []byte("junk")},
		{"leaf, not CA", certPEM(leaf.Certificate[0])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ClientTLSConfig(tc.pem, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestRenewerServesTLS checks that a Renewer's GetClientCertificate works
// in a real handshake and that the next handshake after a renewal presents
// the renewed certificate.
func TestRenewerServesTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert, err := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := ServerTLSConfig(serverCert, ca)
	r := NewRenewer(issueAgent(t, ca, "node-1", time.Hour, time.Now()),
		func(_ context.Context, _ *ecdsa.PrivateKey, csr []byte) ([]byte, error) {
			return ca.SignAgentCSR(csr, "node-1", time.Hour)
		}, RenewerOptions{})
	clientCfg, err := ClientTLSConfig(ca.CertPEM, r.GetClientCertificate)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		st, serr, cerr := handshake(t, serverCfg, clientCfg)
		if serr != nil || cerr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, serr, cerr)
		}
		if !st.PeerCertificates[0].Equal(r.Leaf()) {
			t.Fatalf("handshake %d: server saw another certificate than the current one", i)
		}
		if name, err := PeerAgentName(&st); err != nil || name != "node-1" {
			t.Fatalf("PeerAgentName = %q, %v", name, err)
		}
		if err := r.RenewNow(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
