package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/identity"
)

// startServer runs a server on a free loopback port in a new data dir,
// after tune has adjusted it; it is stopped at cleanup.
func startServer(t *testing.T, tune func(*Server)) (*Server, string) {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, cfg.DataDir
}

// short makes the people-side timeouts that New set short, so that tests
// wait little; a timeout New did not set (zero: none) stays unset.
func short(s *Server) {
	for _, d := range []*time.Duration{&s.handshakeTimeout, &s.http.ReadHeaderTimeout, &s.http.IdleTimeout} {
		if *d > 0 {
			*d = 300 * time.Millisecond
		}
	}
	if s.http.ReadTimeout > 0 {
		s.http.ReadTimeout = 600 * time.Millisecond
	}
}

// bound is how long a test waits for the server to drop a connection: far
// above the short timeouts, far below "never".
const bound = 5 * time.Second

// closedWithin reads c until the server closes it, failing if it is still
// open after d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open for %v", d)
	}
}

func tlsConfig(t *testing.T, dataDir string, protos ...string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: protos, MinVersion: tls.VersionTLS13}
}

// h2Preface is what an HTTP/2 client sends first: the preface and an empty
// SETTINGS frame.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// TestSlowClientsAreDisconnected: a client that holds a connection without
// finishing what it started (the TLS handshake, the request headers, the
// body) or keeps one idle is disconnected within the server's deadlines.
func TestSlowClientsAreDisconnected(t *testing.T) {
	s, dir := startServer(t, short)
	addr := s.Addr()
	tok, err := os.ReadFile(filepath.Join(dir, tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(tok))
	dialTLS := func(t *testing.T, protos ...string) *tls.Conn {
		c, err := tls.Dial("tcp", addr, tlsConfig(t, dir, protos...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"connects and sends nothing", func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			closedWithin(t, c, bound)
		}},
		{"sends part of a ClientHello", func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A handshake record announcing 512 bytes, and 4 of them.
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc})
			closedWithin(t, c, bound)
		}},
		{"sends part of the request headers", func(t *testing.T) {
			c := dialTLS(t, "http/1.1")
			io.WriteString(c, "GET /v1/secrets HTTP/1.1\r\nHost: coffer\r\nAuthorization: Bea")
			closedWithin(t, c, bound)
		}},
		{"sends part of the body", func(t *testing.T) {
			c := dialTLS(t, "http/1.1")
			io.WriteString(c, "PUT /v1/secrets/slow HTTP/1.1\r\nHost: coffer\r\nAuthorization: Bearer "+admin+
				"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"value\":\"")
			closedWithin(t, c, bound)
		}},
		{"keeps an HTTP/1.1 connection idle", func(t *testing.T) {
			c := dialTLS(t, "http/1.1")
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: coffer\r\n\r\n")
			buf := make([]byte, 512)
			c.SetReadDeadline(time.Now().Add(bound))
			if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
				t.Fatalf("response %q, %v", buf[:n], err)
			}
			closedWithin(t, c, bound)
		}},
		{"keeps an HTTP/2 connection idle", func(t *testing.T) {
			c := dialTLS(t, "h2")
			if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
				t.Fatalf("negotiated %q", p)
			}
			io.WriteString(c, h2Preface)
			closedWithin(t, c, bound)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// TestAgentConnectionsOutliveIdleTimeouts: a connection with an agent
// certificate goes to the gRPC server, where people's idle and request
// timeouts do not apply: an idle agent connection stays open.
func TestAgentConnectionsOutliveIdleTimeouts(t *testing.T) {
	s, dir := startServer(t, short)
	ca, _, err := identity.LoadOrCreateCA(dir)
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
	cfg := tlsConfig(t, dir, "h2")
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}
	c, err := tls.Dial("tcp", s.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, h2Preface)
	// Five times people's idle timeout, and more than the handshake's.
	c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	_, err = io.Copy(io.Discard, c)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server closed an idle agent connection: %v", err)
	}
}

// A second server on a data dir that a running server holds used to panic
// (a nil *bolt.Backend inside the store interface, closed on the way out),
// hiding the helpful "locked by another process" error.
func TestSecondServerOnALockedStoreSaysSo(t *testing.T) {
	_, dir := startServer(t, nil)
	cfg := Defaults()
	cfg.DataDir = dir
	cfg.Listen = "127.0.0.1:0"
	s, err := New(context.Background(), cfg, nil)
	if err == nil {
		s.close()
		t.Fatal("a second server opened a data dir that another one holds")
	}
	if !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("error %q does not say the store is locked", err)
	}
}
