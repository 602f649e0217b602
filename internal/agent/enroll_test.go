package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/agent"
	"coffer/internal/identity"
	"coffer/internal/server"
)

// enrollServer runs an in-process coffer-server and returns its address, CA
// and a function that makes a join token with the given request fields.
func enrollServer(t *testing.T) (addr string, caPEM []byte, join func(map[string]any) string) {
	t.Helper()
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "server")
	cfg.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	caPEM, _ = os.ReadFile(filepath.Join(cfg.DataDir, "ca.pem"))
	return s.Addr(), caPEM, joinMaker(t, s.Addr(), caPEM, cfg.DataDir)
}

// joinMaker returns a function that makes a join token with the given
// request fields on the server at addr (data dir dataDir).
func joinMaker(t *testing.T, addr string, caPEM []byte, dataDir string) func(map[string]any) string {
	tok, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	return func(req map[string]any) string {
		t.Helper()
		req["role"] = "agent"
		b, _ := json.Marshal(req)
		r, _ := http.NewRequest("POST", "https://"+addr+"/v1/tokens", bytes.NewReader(b))
		r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var out struct {
			Token string `json:"token"`
		}
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &out) != nil {
			t.Fatalf("create join token: %d %s", resp.StatusCode, data)
		}
		return out.Token
	}
}

// TestEnrollUnderATakenName: the agent gets a clear error naming what to
// do, keeps nothing in its state dir, and its join token still works.
func TestEnrollUnderATakenName(t *testing.T) {
	addr, caPEM, join := enrollServer(t)
	dir := t.TempDir()
	first, err := agent.LoadOrEnroll(context.Background(), addr, caPEM, filepath.Join(dir, "a"), "node-1", join(map[string]any{}))
	if err != nil {
		t.Fatal(err)
	}
	tok := join(map[string]any{})
	_, err = agent.LoadOrEnroll(context.Background(), addr, caPEM, filepath.Join(dir, "b"), "node-1", tok)
	if !errors.Is(err, agent.ErrNameTaken) || !strings.Contains(err.Error(), "coffer agent rm node-1") || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("second enrollment of node-1: %v", err)
	}
	if _, err := identity.LoadAgentIdentity(filepath.Join(dir, "b")); err == nil {
		t.Fatal("a refused enrollment left an identity behind")
	}
	second, err := agent.LoadOrEnroll(context.Background(), addr, caPEM, filepath.Join(dir, "b"), "node-2", tok)
	if err != nil {
		t.Fatalf("the join token of the refused enrollment: %v", err)
	}
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("same certificate twice")
	}
}

// TestEnrolledCertificateCarriesTheTokensLabels: what the admin put on the
// join token is in the agent's certificate.
func TestEnrolledCertificateCarriesTheTokensLabels(t *testing.T) {
	addr, caPEM, join := enrollServer(t)
	want := map[string]string{"env": "prod", "zone": "eu-1"}
	cert, err := agent.LoadOrEnroll(context.Background(), addr, caPEM, t.TempDir(), "node-1", join(map[string]any{"agent_labels": want}))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := identity.AgentLabels(cert.Leaf); err != nil || !maps.Equal(got, want) {
		t.Fatalf("labels = %v, %v", got, err)
	}
}
