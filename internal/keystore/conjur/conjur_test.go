package conjur

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/keystore/conjur/conjurfake"
	"coffer/internal/keystore/keystoretest"
)

const apiKey = "3ahcddy39rcxzh3ggac4cwk3j2r8pqwdg33059y835ys2rh2kzs2a"

type harness struct {
	fake   *conjurfake.Server
	proxy  *keystoretest.Proxy
	caFile string
	keyF   string
}

func newHarness(t *testing.T) *harness {
	f := conjurfake.New(t, "myorg", "host/coffer", apiKey)
	dir := t.TempDir()
	h := &harness{fake: f, proxy: keystoretest.NewProxy(t, strings.TrimPrefix(f.URL, "https://")),
		caFile: filepath.Join(dir, "ca.pem"), keyF: filepath.Join(dir, "api-key")}
	os.WriteFile(h.caFile, f.CertPEM(), 0o600)
	os.WriteFile(h.keyF, []byte(apiKey+"\n"), 0o600)
	return h
}

func (h *harness) config() Config {
	return Config{URL: "https://" + h.proxy.Addr(), Account: "myorg", HostID: "coffer", APIKeyFile: h.keyF, CAFile: h.caFile}
}

func (h *harness) open(t *testing.T, cfg Config, max int) *Keystore {
	t.Helper()
	ks, err := New(cfg, keystore.Options{Name: "conjur", MaxValueSize: max, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ks.pageSize = 25 // several pages for the suite's ManyItems
	t.Cleanup(func() { ks.Close() })
	return ks
}

func (h *harness) Name() string                                 { return "conjur" }
func (h *harness) Item(n string) string                         { return "suite/" + n }
func (h *harness) Open(t *testing.T, max int) keystore.Keystore { return h.open(t, h.config(), max) }
func (h *harness) Put(t *testing.T, item string, f map[string]string) {
	h.fake.AddSecret(item, keystoretest.JSON(f))
}
func (h *harness) PutRaw(t *testing.T, item string, v []byte) { h.fake.AddSecret(item, v) }
func (h *harness) Delete(t *testing.T, item string)           { h.fake.DeleteVariable(item) }
func (h *harness) BreakAccess(t *testing.T)                   { h.fake.SetAPIKey("host/coffer", "rotated") }
func (h *harness) RestoreAccess(t *testing.T)                 { h.fake.SetAPIKey("host/coffer", apiKey) }
func (h *harness) Down(t *testing.T)                          { h.proxy.Down() }
func (h *harness) Up(t *testing.T)                            { h.proxy.Up(t) }
func (h *harness) BadItems() []string                         { return []string{"a b", "a#b", "a?b", "a/../b", ".."} }

func TestConformance(t *testing.T) { keystoretest.Run(t, newHarness(t)) }

func TestCheckCostAndDeniedVariable(t *testing.T) {
	h := newHarness(t)
	var items []string
	for i := range 60 {
		id := "cost/" + strings.Repeat("v", i%7+1) + string(rune('a'+i%26)) + strings.Repeat("0", i/26)
		h.fake.AddSecret(id, []byte("x"))
		items = append(items, id)
	}
	ks := h.open(t, h.config(), 0)
	st, err := ks.Check(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if st[it].Err != nil || st[it].Version != "1" {
			t.Fatalf("%s: %+v", it, st[it])
		}
	}
	if r, s := h.fake.Calls("resources"), h.fake.Calls("secret"); r != 3 || s != 0 {
		t.Errorf("checking 60 variables took %d listing pages and %d secret reads, want 3 and 0", r, s)
	}
	// Execute privilege taken away: the read is refused, access lost.
	h.fake.Deny(items[0], true)
	if _, err := ks.Read(context.Background(), items[0]); !errors.Is(err, keystore.ErrAccessLost) {
		t.Errorf("Read of a denied variable: %v", err)
	}
}

func TestVariableWithoutValueIsNotFound(t *testing.T) {
	h := newHarness(t)
	ks := h.open(t, h.config(), 0)
	h.fake.AddSecret("v1", []byte("one"))
	h.fake.AddSecret("v1", []byte("two"))
	it, err := ks.Read(context.Background(), "v1")
	if err != nil || string(it.Value) != "two" || it.Version != "2" {
		t.Fatalf("Read = %q v%s, %v", it.Value, it.Version, err)
	}
}

func TestBadAPIKeyFile(t *testing.T) {
	h := newHarness(t)
	cfg := h.config()
	cfg.APIKeyFile = filepath.Join(t.TempDir(), "none")
	if _, err := New(cfg, keystore.Options{Name: "conjur"}); !errors.Is(err, keystore.ErrConfig) || !strings.Contains(err.Error(), "api_key_file") {
		t.Fatalf("New with a missing key file: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "https://conjur.example", Account: "org", HostID: "coffer", APIKeyFile: "/k"}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.URL = "http://conjur.example" }, "url"},
		{func(c *Config) { c.Account = "" }, "account"},
		{func(c *Config) { c.HostID = "host/" }, "host_id"},
		{func(c *Config) { c.APIKeyFile = "" }, "api_key_file"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c, err, tc.want)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
}
