package vault

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
	"coffer/internal/keystore/vault/vaulttest"
)

const readPolicy = `
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
`

// harness runs the conformance suite against a real Vault dev server,
// reached through a proxy that can cut the network.
type harness struct {
	s         *vaulttest.Server
	proxy     *keystoretest.Proxy
	tokenFile string
}

func newHarness(t *testing.T) *harness {
	s := vaulttest.Start(t)
	s.Policy(t, "coffer-read", readPolicy)
	tok := s.Token(t, []string{"coffer-read"}, map[string]any{"ttl": "1h"})
	return &harness{s: s, proxy: keystoretest.NewProxy(t, s.HostPort()), tokenFile: vaulttest.WriteFile(t, "token", tok+"\n")}
}

func (h *harness) config() Config {
	return Config{Address: "http://" + h.proxy.Addr(), TokenFile: h.tokenFile, KVMount: "secret", MaxRetries: -1}
}

func (h *harness) open(t *testing.T, cfg Config, max int) *Keystore {
	t.Helper()
	ks, err := New(cfg, keystore.Options{Name: "vault", MaxValueSize: max, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func (h *harness) Name() string         { return "vault" }
func (h *harness) Item(n string) string { return "suite/" + n }
func (h *harness) BadItems() []string {
	return []string{"/a", "a/", "a//b", "a/../b", "a/./b", "a?b", "a%2fb", "a b", "a#b"}
}
func (h *harness) Down(t *testing.T) { h.proxy.Down() }
func (h *harness) Up(t *testing.T)   { h.proxy.Up(t) }
func (h *harness) BreakAccess(t *testing.T) {
	h.s.Policy(t, "coffer-read", `path "secret/*" { capabilities = ["deny"] }`)
}
func (h *harness) RestoreAccess(t *testing.T) { h.s.Policy(t, "coffer-read", readPolicy) }

func (h *harness) Open(t *testing.T, max int) keystore.Keystore { return h.open(t, h.config(), max) }

func (h *harness) Put(t *testing.T, item string, fields map[string]string) {
	t.Helper()
	data := map[string]any{}
	for k, v := range fields {
		data[k] = v
	}
	if _, err := h.s.Root.KVv2("secret").Put(context.Background(), item, data); err != nil {
		t.Fatalf("put %s: %v", item, err)
	}
}

func (h *harness) Delete(t *testing.T, item string) {
	t.Helper()
	if err := h.s.Root.KVv2("secret").Delete(context.Background(), item); err != nil {
		t.Fatalf("delete %s: %v", item, err)
	}
}

// Disable destroys the current version for good.
func (h *harness) Disable(t *testing.T, item string) {
	t.Helper()
	m, err := h.s.Root.KVv2("secret").GetMetadata(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.s.Root.KVv2("secret").Destroy(context.Background(), item, []int{m.CurrentVersion}); err != nil {
		t.Fatalf("destroy %s: %v", item, err)
	}
}

func TestConformance(t *testing.T) {
	keystoretest.Run(t, newHarness(t))
}

// TestVaultSpecific covers what only Vault has, against the same server.
func TestVaultSpecific(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	kv := h.s.Root.KVv2("secret")
	if _, err := kv.Put(ctx, "app/db", map[string]any{"password": "p<w>&d", "port": 5432, "tls": map[string]any{"on": true}}); err != nil {
		t.Fatal(err)
	}

	t.Run("NonStringValues", func(t *testing.T) {
		ks := h.open(t, h.config(), 0)
		it, err := ks.Read(ctx, "app/db")
		if want := `{"password":"p<w>&d","port":5432,"tls":{"on":true}}`; err != nil || string(it.Value) != want || it.Version != "1" {
			t.Fatalf("Read = %q v%s, %v; want %s v1", string(it.Value), it.Version, err, want)
		}
		for key, want := range map[string]string{"password": "p<w>&d", "port": "5432", "tls": `{"on":true}`} {
			got, err := keystore.Fetch(ctx, ks, keystore.Ref{Upstream: "vault", Item: "app/db", Key: key})
			if err != nil || string(got.Value) != want {
				t.Errorf("#%s = %q, %v; want %q", key, string(got.Value), err, want)
			}
		}
	})

	t.Run("DeletedMetadataIsNotFound", func(t *testing.T) {
		ks := h.open(t, h.config(), 0)
		kv.Put(ctx, "app/gone", map[string]any{"a": "b"})
		if err := kv.DeleteMetadata(ctx, "app/gone"); err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Read(ctx, "app/gone"); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("Read: %v, want ErrNotFound", err)
		}
		st, err := ks.Check(ctx, []string{"app/gone"})
		if err != nil || !errors.Is(st["app/gone"].Err, keystore.ErrNotFound) {
			t.Fatalf("Check: %v %v", st, err)
		}
	})

	t.Run("MissingMountIsNotGone", func(t *testing.T) {
		// With a token whose policy covers the path, Vault says the mount
		// is missing ("no handler for route"). (A token scoped to secret/
		// gets 403 there: Vault does not tell it apart from a denial.)
		h.s.Policy(t, "read-all", `path "*" { capabilities = ["read"] }`)
		cfg := h.config()
		cfg.TokenFile = vaulttest.WriteFile(t, "all", h.s.Token(t, []string{"read-all"}, nil))
		cfg.KVMount = "nosuch"
		ks := h.open(t, cfg, 0)
		_, err := ks.Read(ctx, "app/db")
		if !errors.Is(err, keystore.ErrUnreachable) || keystore.Gone(err) || !strings.Contains(err.Error(), "not mounted") {
			t.Fatalf("Read from a missing mount: %v; want unreachable (never revoke on a config mistake)", err)
		}
	})

	t.Run("BadToken", func(t *testing.T) {
		cfg := h.config()
		cfg.TokenFile = vaulttest.WriteFile(t, "bad", "hvs.not-a-token")
		ks := h.open(t, cfg, 0)
		_, err := ks.Read(ctx, "app/db")
		if !errors.Is(err, keystore.ErrAccessLost) || strings.Contains(err.Error(), "hvs.not") {
			t.Fatalf("Read with a bad token: %v; want ErrAccessLost without the token", err)
		}
		st, err := ks.Check(ctx, []string{"app/db"})
		if err == nil {
			err = st["app/db"].Err
		}
		if !errors.Is(err, keystore.ErrAccessLost) {
			t.Fatalf("Check with a bad token: %v", err)
		}
		cfg.TokenFile = "/nonexistent/token"
		ks = h.open(t, cfg, 0)
		if _, err := ks.Read(ctx, "app/db"); !errors.Is(err, keystore.ErrAccessLost) || !strings.Contains(err.Error(), "token_file") {
			t.Fatalf("Read with a missing token file: %v", err)
		}
	})

	t.Run("TokenExpiresThenFileRotated", func(t *testing.T) {
		cfg := h.config()
		cfg.TokenFile = vaulttest.WriteFile(t, "short", h.s.Token(t, []string{"coffer-read"}, map[string]any{"ttl": "2s", "renewable": false}))
		ks := h.open(t, cfg, 0)
		if _, err := ks.Read(ctx, "app/db"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := ks.Read(ctx, "app/db")
			if errors.Is(err, keystore.ErrAccessLost) {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("Read after the token's TTL: %v; want ErrAccessLost", err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		// An operator (or Vault Agent) writes a new token: the next Read,
		// answered 403 with the old one, re-reads the file.
		os.WriteFile(cfg.TokenFile, []byte(h.s.Token(t, []string{"coffer-read"}, map[string]any{"ttl": "1h"})), 0o600)
		if _, err := ks.Read(ctx, "app/db"); err != nil {
			t.Fatalf("Read after the token file was rotated: %v", err)
		}
	})

	t.Run("PeriodicTokenIsRenewed", func(t *testing.T) {
		cfg := h.config()
		cfg.TokenFile = vaulttest.WriteFile(t, "periodic", h.s.Token(t, []string{"coffer-read"}, map[string]any{"period": "3s"}))
		ks := h.open(t, cfg, 0)
		for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
			if _, err := ks.Read(ctx, "app/db"); err != nil {
				t.Fatalf("Read with a renewed periodic token: %v", err)
			}
		}
	})

	t.Run("AppRole", func(t *testing.T) {
		if err := h.s.Root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.s.Root.Logical().Write("auth/approle/role/coffer", map[string]any{
			"token_policies": "coffer-read", "token_ttl": "2s", "token_max_ttl": "4s"}); err != nil {
			t.Fatal(err)
		}
		rid, err := h.s.Root.Logical().Read("auth/approle/role/coffer/role-id")
		if err != nil {
			t.Fatal(err)
		}
		sid, err := h.s.Root.Logical().Write("auth/approle/role/coffer/secret-id", nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := h.config()
		cfg.TokenFile = ""
		cfg.AppRole = &AppRole{
			RoleIDFile:   vaulttest.WriteFile(t, "role", rid.Data["role_id"].(string)),
			SecretIDFile: vaulttest.WriteFile(t, "sid", sid.Data["secret_id"].(string)),
		}
		ks := h.open(t, cfg, 0)
		// Past token_max_ttl: renewed, then logged in again.
		for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
			if _, err := ks.Read(ctx, "app/db"); err != nil {
				t.Fatalf("Read with AppRole: %v", err)
			}
		}
		cfg.AppRole.SecretIDFile = vaulttest.WriteFile(t, "badsid", "00000000-0000-0000-0000-000000000000")
		bad := h.open(t, cfg, 0)
		if _, err := bad.Read(ctx, "app/db"); !errors.Is(err, keystore.ErrAccessLost) {
			t.Fatalf("Read with a wrong secret id: %v, want ErrAccessLost", err)
		}
	})

	t.Run("SealedIsUnreachable", func(t *testing.T) {
		ks := h.open(t, h.config(), 0)
		h.s.Seal(t)
		_, err := ks.Read(ctx, "app/db")
		if !errors.Is(err, keystore.ErrUnreachable) || keystore.Gone(err) {
			h.s.Unseal(t)
			t.Fatalf("Read from a sealed Vault: %v, want ErrUnreachable", err)
		}
		st, err := ks.Check(ctx, []string{"app/db"})
		if err == nil {
			err = st["app/db"].Err
		}
		h.s.Unseal(t)
		if !errors.Is(err, keystore.ErrUnreachable) {
			t.Fatalf("Check on a sealed Vault: %v", err)
		}
		if _, err := ks.Read(ctx, "app/db"); err != nil {
			t.Fatalf("Read after unseal: %v", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Address: "https://vault.example:8200", TokenFile: "/t", KVMount: "secret"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Address = "" }, "address is missing"},
		{func(c *Config) { c.Address = "http://vault.example:8200" }, "loopback"},
		{func(c *Config) { c.Address = "ftp://x" }, "want https://"},
		{func(c *Config) { c.Address = "https://x/v1" }, "want https://"},
		{func(c *Config) { c.KVMount = "/secret" }, "kv_mount"},
		{func(c *Config) { c.TokenFile = "" }, "exactly one"},
		{func(c *Config) { c.AppRole = &AppRole{RoleIDFile: "a", SecretIDFile: "b"} }, "exactly one"},
		{func(c *Config) { c.TokenFile = ""; c.AppRole = &AppRole{RoleIDFile: "a"} }, "secret_id_file"},
		{func(c *Config) { c.TokenFile = ""; c.Cert = &CertAuth{CertFile: "a"} }, "key_file"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c, err, tc.want)
		}
	}
	c := ok
	c.Address = "http://127.0.0.1:8200"
	if err := c.Validate(); err != nil {
		t.Errorf("http to loopback: %v", err)
	}
}

// TestCertAuth logs in with a TLS client certificate over HTTPS.
func TestCertAuth(t *testing.T) {
	ctx := context.Background()
	s := vaulttest.StartTLS(t)
	s.Policy(t, "coffer-read", readPolicy)
	if err := s.Root.Sys().EnableAuthWithOptions("cert", &api.EnableAuthOptions{Type: "cert"}); err != nil {
		t.Fatal(err)
	}
	pki := keystoretest.NewPKI(t)
	caPEM, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Root.Logical().Write("auth/cert/certs/coffer", map[string]any{
		"certificate": string(caPEM), "token_policies": "coffer-read", "token_ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Root.KVv2("secret").Put(ctx, "app/tls", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	cert, key := pki.Issue(t, "coffer", false)
	cfg := Config{Address: s.Addr, CAFile: s.CAFile, KVMount: "secret", Cert: &CertAuth{CertFile: cert, KeyFile: key, Role: "coffer"}, MaxRetries: -1}
	ks, err := New(cfg, keystore.Options{Name: "vault"})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	if it, err := ks.Read(ctx, "app/tls"); err != nil || string(it.Value) != `{"k":"v"}` {
		t.Fatalf("Read with cert auth = %q, %v", it.Value, err)
	}
	// A certificate from a CA Vault does not trust: login refused.
	cert, key = keystoretest.NewPKI(t).Issue(t, "intruder", false)
	cfg.Cert = &CertAuth{CertFile: cert, KeyFile: key}
	bad, err := New(cfg, keystore.Options{Name: "vault"})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Read(ctx, "app/tls"); !errors.Is(err, keystore.ErrAccessLost) {
		t.Fatalf("Read with an untrusted certificate: %v, want ErrAccessLost", err)
	}
	// A server certificate Coffer does not trust: unreachable, never gone.
	cfg.CAFile = pki.CAFile
	wrongCA, _ := New(cfg, keystore.Options{Name: "vault"})
	if _, err := wrongCA.Read(ctx, "app/tls"); !errors.Is(err, keystore.ErrUnreachable) {
		t.Fatalf("Read trusting the wrong CA: %v, want ErrUnreachable", err)
	}
}
