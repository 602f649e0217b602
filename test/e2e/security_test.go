package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/agent"
	"coffer/internal/identity"
	"coffer/test/testkit"
)

// dialSync opens a Sync stream with the given client certificate (nil for none).
func dialSync(t *testing.T, srv *testkit.Server, cert *tls.Certificate) (cofferv1.AgentService_SyncClient, error) {
	t.Helper()
	caPEM, err := os.ReadFile(srv.CA)
	if err != nil {
		t.Fatal(err)
	}
	get := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	}
	cfg, err := identity.ClientTLSConfig(caPEM, get)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := cofferv1.NewAgentServiceClient(conn).Sync(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{}}}); err != nil {
		return stream, err
	}
	// The server answers a refused stream by ending it.
	_, err = recvWithin(stream, 300*time.Millisecond)
	return stream, err
}

// recvWithin returns the stream's next message or error, or nil, nil if
// nothing came within d (the stream is open and idle).
func recvWithin(stream cofferv1.AgentService_SyncClient, d time.Duration) (*cofferv1.ServerMessage, error) {
	type res struct {
		m   *cofferv1.ServerMessage
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := stream.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d):
		return nil, nil
	}
}

func TestAgentChannelRefusesStrangers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	srv := testkit.StartServer(t, filepath.Join(dir, "server"))
	caPEM, _ := os.ReadFile(srv.CA)
	ctx := context.Background()

	// An enrolled agent gets an open stream.
	join := strings.TrimSpace(srv.MustCLI(t, "", "token", "create", "--role", "agent"))
	cert, err := agent.LoadOrEnroll(ctx, srv.Addr, caPEM, filepath.Join(dir, "a1"), "node-1", join)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := dialSync(t, srv, &cert)
	if err != nil {
		t.Fatalf("enrolled agent refused: %v", err)
	}

	// A replayed join token is refused.
	if _, err := agent.LoadOrEnroll(ctx, srv.Addr, caPEM, filepath.Join(dir, "a2"), "node-2", join); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("replayed join token: %v", err)
	}
	// A person's token is no join token.
	if _, err := agent.LoadOrEnroll(ctx, srv.Addr, caPEM, filepath.Join(dir, "a3"), "node-3", srv.Token); err == nil {
		t.Fatal("admin token accepted as a join token")
	}

	// No client certificate. With TLS 1.3 the client's handshake ends
	// before the server has checked its (missing) certificate, so the
	// refusal reaches it as the server's "certificate required" alert, or,
	// when the server closes first, as the connection ending (EOF, reset).
	if _, err := dialSync(t, srv, nil); err == nil || !refusedHandshake(err) {
		t.Fatalf("no certificate: %v", err)
	}

	// A certificate from another CA.
	otherCA, _, err := identity.LoadOrCreateCA(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, "node-1")
	der, err := otherCA.SignAgentCSR(csr, "node-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.SaveAgentIdentity(filepath.Join(dir, "forged"), der, key); err != nil {
		t.Fatal(err)
	}
	forged, err := identity.LoadAgentIdentity(filepath.Join(dir, "forged"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialSync(t, srv, &forged); err == nil {
		t.Fatal("certificate from another CA accepted")
	}

	// Revocation closes the open stream at once and refuses the certificate.
	out := srv.MustCLI(t, "", "agent", "ls")
	if !strings.Contains(out, "node-1") {
		t.Fatalf("agent ls:\n%s", out)
	}
	srv.MustCLI(t, "", "agent", "rm", "node-1")
	if _, err := recvWithin(stream, 5*time.Second); err == nil {
		t.Fatal("revoked agent's stream still open")
	}
	if _, err := dialSync(t, srv, &cert); err == nil {
		t.Fatal("revoked agent's certificate accepted")
	}
}

// renew asks the server for a new certificate with cert and returns it.
func renew(t *testing.T, srv *testkit.Server, dir string, cert tls.Certificate) tls.Certificate {
	t.Helper()
	caPEM, _ := os.ReadFile(srv.CA)
	cfg, err := identity.ClientTLSConfig(caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, "node-1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cofferv1.NewAgentServiceClient(conn).Renew(ctx, &cofferv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := identity.SaveAgentIdentity(dir, resp.GetCertificate(), key); err != nil {
		t.Fatal(err)
	}
	c, err := identity.LoadAgentIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAgentCertificateRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	srv := testkit.StartServer(t, filepath.Join(dir, "server"))
	caPEM, _ := os.ReadFile(srv.CA)
	join := strings.TrimSpace(srv.MustCLI(t, "", "token", "create", "--role", "agent"))
	first, err := agent.LoadOrEnroll(context.Background(), srv.Addr, caPEM, filepath.Join(dir, "a"), "node-1", join)
	if err != nil {
		t.Fatal(err)
	}
	second := renew(t, srv, filepath.Join(dir, "b"), first)
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}
	for name, c := range map[string]tls.Certificate{"renewed": second, "previous": first} {
		if _, err := dialSync(t, srv, &c); err != nil {
			t.Fatalf("%s certificate refused: %v", name, err)
		}
	}
	renew(t, srv, filepath.Join(dir, "c"), second)
	if _, err := dialSync(t, srv, &first); err == nil {
		t.Fatal("a certificate two renewals old is still accepted")
	}
}

// refusedHandshake reports whether err is the server refusing a TLS client
// (its alert, or the connection it closed).
func refusedHandshake(err error) bool {
	for _, s := range []string{"certificate required", "EOF", "connection reset", "broken pipe"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}
