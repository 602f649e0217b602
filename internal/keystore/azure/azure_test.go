package azure

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/keystore/azure/azurefake"
	"coffer/internal/keystore/keystoretest"
)

type harness struct {
	fake   *azurefake.Server
	proxy  *keystoretest.Proxy
	cred   *azurefake.Credential
	caFile string
}

func newHarness(t *testing.T) *harness {
	f := azurefake.New(t, "tok-1")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, f.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return &harness{fake: f, proxy: keystoretest.NewProxy(t, strings.TrimPrefix(f.URL, "https://")),
		cred: &azurefake.Credential{Token: "tok-1"}, caFile: ca}
}

func (h *harness) config() Config {
	return Config{VaultURL: "https://" + h.proxy.Addr(), CAFile: h.caFile, DisableChallengeResourceVerification: true,
		Credential: h.cred, MaxRetries: -1}
}

func (h *harness) open(t *testing.T, cfg Config, max int) *Keystore {
	t.Helper()
	ks, err := New(cfg, keystore.Options{Name: "azure", MaxValueSize: max, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func (h *harness) Name() string                                 { return "azure" }
func (h *harness) Item(n string) string                         { return "suite-" + n }
func (h *harness) Open(t *testing.T, max int) keystore.Keystore { return h.open(t, h.config(), max) }
func (h *harness) Put(t *testing.T, item string, f map[string]string) {
	h.fake.SetSecret(item, string(keystoretest.JSON(f)))
}
func (h *harness) PutRaw(t *testing.T, item string, v []byte) { h.fake.SetSecret(item, string(v)) }
func (h *harness) UTF8Only()                                  {}
func (h *harness) Delete(t *testing.T, item string)           { h.fake.DeleteSecret(item) }
func (h *harness) Disable(t *testing.T, item string)          { h.fake.Disable(item, true) }
func (h *harness) BreakAccess(t *testing.T)                   { h.fake.Deny(true) }
func (h *harness) RestoreAccess(t *testing.T)                 { h.fake.Deny(false) }
func (h *harness) Down(t *testing.T)                          { h.proxy.Down() }
func (h *harness) Up(t *testing.T)                            { h.proxy.Up(t) }
func (h *harness) BadItems() []string                         { return []string{"a/b", "a_b", "a.b", strings.Repeat("a", 128)} }

func TestConformance(t *testing.T) { keystoretest.Run(t, newHarness(t)) }

func TestCheckCostAndCase(t *testing.T) {
	h := newHarness(t)
	var items []string
	for i := range 60 {
		name := "Cost-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		h.fake.SetSecret(name, "v")
		items = append(items, strings.ToLower(name)) // names are case-insensitive
	}
	ks := h.open(t, h.config(), 0)
	ks.now = func() time.Time { return time.Now().Add(time.Minute) } // all settled
	st, err := ks.Check(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if st[it].Err != nil {
			t.Fatalf("%s: %v", it, st[it].Err)
		}
	}
	if l, g := h.fake.Calls("list"), h.fake.Calls("get"); l != 3 || g != 0 {
		t.Errorf("checking 60 secrets took %d list pages and %d gets, want 3 and 0", l, g)
	}
	// Items changed in the last seconds are read, to get their version ids.
	ks.now = time.Now
	h.fake.SetSecret("Cost-a", "v2")
	if _, err := ks.Check(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if g := h.fake.Calls("get"); g != 60 {
		t.Errorf("gets = %d, want 60 (all were just written)", g)
	}
}

// TestSameSecondChangeIsSeen: two versions within one second have the same
// attributes.updated; the first stamp is unsettled, so the second version
// is read once the stamp settles.
func TestSameSecondChangeIsSeen(t *testing.T) {
	h := newHarness(t)
	ks := h.open(t, h.config(), 0)
	now := time.Now()
	ks.now = func() time.Time { return now }
	at := now.Truncate(time.Second)
	h.fake.SetSecret("rot", "v1")
	h.fake.SetUpdated("rot", at)
	it, err := ks.Read(context.Background(), "rot")
	if err != nil || !strings.Contains(it.Version, "~") {
		t.Fatalf("Read just after a change = %q, %v; want an unsettled stamp", it.Version, err)
	}
	h.fake.SetSecret("rot", "v2") // same second
	h.fake.SetUpdated("rot", at)
	now = now.Add(10 * time.Second)
	st, err := ks.Check(context.Background(), []string{"rot"})
	if err != nil || st["rot"].Version == it.Version {
		t.Fatalf("Check after the stamp settled = %+v, %v; want a change from %q", st["rot"], err, it.Version)
	}
	it2, _ := ks.Read(context.Background(), "rot")
	if string(it2.Value) != "v2" || it2.Version != st["rot"].Version {
		t.Fatalf("Read = %q %q, want v2 at %q", it2.Value, it2.Version, st["rot"].Version)
	}
}

func TestChallengeAndCredential(t *testing.T) {
	h := newHarness(t)
	h.fake.SetSecret("c", "v")
	ks := h.open(t, h.config(), 0)
	if _, err := ks.Read(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if h.cred.Calls() != 1 {
		t.Errorf("token requests = %d, want 1 (after the challenge)", h.cred.Calls())
	}
	// Without disabling the resource check, the fake's challenge (naming
	// vault.azure.net, not 127.0.0.1) is refused by the SDK.
	cfg := h.config()
	cfg.DisableChallengeResourceVerification = false
	strict := h.open(t, cfg, 0)
	if _, err := strict.Read(context.Background(), "c"); err == nil || keystore.Gone(err) {
		t.Errorf("Read with challenge verification against a test endpoint: %v; want a not-Gone error", err)
	}
	// A credential that cannot get a token: unreachable, not gone.
	cfg = h.config()
	cfg.Credential = &azurefake.Credential{Err: errors.New("no managed identity endpoint")}
	bad := h.open(t, cfg, 0)
	if _, err := bad.Read(context.Background(), "c"); !errors.Is(err, keystore.ErrUnreachable) {
		t.Errorf("Read without a token: %v", err)
	}
	// A token the vault does not accept: access lost.
	cfg.Credential = &azurefake.Credential{Token: "stolen"}
	wrong := h.open(t, cfg, 0)
	if _, err := wrong.Read(context.Background(), "c"); !errors.Is(err, keystore.ErrAccessLost) {
		t.Errorf("Read with a rejected token: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, u := range []string{"", "http://x.vault.azure.net", "https://", "x.vault.azure.net", "https://x.vault.azure.net/secrets"} {
		c := Config{VaultURL: u}
		if err := c.Validate(); err == nil {
			t.Errorf("vault_url %q accepted", u)
		}
	}
	c := Config{VaultURL: "https://x.vault.azure.net/"}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	c.DisableChallengeResourceVerification = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("challenge verification off for a real vault: %v", err)
	}
}
