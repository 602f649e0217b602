// Package vaulttest starts a real HashiCorp Vault dev server on 127.0.0.1
// for one test, from the binary scripts/test-tools.sh builds (the test is
// skipped when it is missing, see internal/testtools).
package vaulttest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/testtools"
)

// Server is a running Vault dev server: in memory, unsealed, KV v2 mounted
// at secret/.
type Server struct {
	Addr      string      // http://127.0.0.1:PORT (https with StartTLS)
	CAFile    string      // with StartTLS: the CA of the server's certificate
	RootToken string      // the root token
	UnsealKey string      // the single unseal key (base64)
	Root      *api.Client // a client with the root token
	log       string
}

// Start starts a dev server and stops it when the test ends.
func Start(t testing.TB) *Server { t.Helper(); return start(t, false) }

// StartTLS starts a dev server with an HTTPS listener (-dev-tls): its
// certificate is for 127.0.0.1, signed by the CA in Server.CAFile, and it
// asks clients for certificates (for cert auth).
func StartTLS(t testing.TB) *Server { t.Helper(); return start(t, true) }

func start(t testing.TB, useTLS bool) *Server {
	t.Helper()
	bin := testtools.Path(t, testtools.Vault)
	dir := t.TempDir()
	port := freePortPair(t)
	s := &Server{
		Addr:      "http://127.0.0.1:" + strconv.Itoa(port),
		RootToken: "root-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		log:       filepath.Join(dir, "vault.log"),
	}
	out, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	args := []string{"server", "-dev", "-dev-root-token-id=" + s.RootToken,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port), "-dev-no-store-token"}
	if useTLS {
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+dir)
		s.Addr = "https://127.0.0.1:" + strconv.Itoa(port)
		s.CAFile = filepath.Join(dir, "vault-ca.pem")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "VAULT_DISABLE_MLOCK=true"}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vault: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	deadline := time.Now().Add(90 * time.Second)
	var root *api.Client
	for {
		if root == nil && (!useTLS || fileExists(s.CAFile)) {
			cfg := api.DefaultConfig()
			cfg.Address = s.Addr
			cfg.MaxRetries = 0
			tlsErr := error(nil)
			if useTLS {
				tlsErr = cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CAFile}) // may be half written: try again
			}
			if tlsErr == nil {
				c, err := api.NewClient(cfg)
				if err != nil {
					t.Fatal(err)
				}
				c.SetToken(s.RootToken)
				root, s.Root = c, c
			}
		}
		var err error
		if root != nil {
			var h *api.HealthResponse
			h, err = root.Sys().HealthWithContext(context.Background())
			if err == nil && h.Initialized && !h.Sealed {
				break
			}
		}
		select {
		case <-done:
			t.Fatalf("vault exited before it was ready:\n%s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("vault not ready after 90s (%v):\n%s", err, s.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The dev banner with the unseal key is printed just after Vault
	// starts answering.
	re := regexp.MustCompile(`Unseal Key: (\S+)`)
	for {
		if m := re.FindStringSubmatch(s.Log()); m != nil {
			s.UnsealKey = m[1]
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no unseal key in vault's output:\n%s", s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns the server's output so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Token creates a token with the given policies and options (e.g.
// "ttl": "2s", "renewable": false, "period": "3s").
func (s *Server) Token(t testing.TB, policies []string, opts map[string]any) string {
	t.Helper()
	body := map[string]any{"policies": policies, "no_default_policy": false}
	for k, v := range opts {
		body[k] = v
	}
	sec, err := s.Root.Logical().Write("auth/token/create", body)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// Policy writes an ACL policy.
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Root.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatalf("put policy %s: %v", name, err)
	}
}

// Seal seals the server; Unseal unseals it again with the unseal key.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Root.Sys().Seal(); err != nil {
		t.Fatalf("seal: %v", err)
	}
}

// Unseal unseals the server.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	st, err := s.Root.Sys().Unseal(s.UnsealKey)
	if err != nil || st.Sealed {
		t.Fatalf("unseal: %v %+v", err, st)
	}
}

// HostPort is the server's host:port.
func (s *Server) HostPort() string {
	return strings.TrimPrefix(strings.TrimPrefix(s.Addr, "http://"), "https://")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// freePortPair finds a port p such that p and p+1 (Vault's cluster port)
// are free on 127.0.0.1.
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		ln.Close()
		if err == nil {
			ln2.Close()
			return p
		}
	}
	t.Fatal("no free port pair")
	return 0
}

// WriteFile writes content to a new 0600 file in the test's temp dir.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
