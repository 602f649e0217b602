package ccp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/keystore/ccp/ccpfake"
	"coffer/internal/keystore/keystoretest"
)

type harness struct {
	fake          *ccpfake.Server
	proxy         *keystoretest.Proxy
	cert, key, ca string
}

func newHarness(t *testing.T) *harness {
	pki := keystoretest.NewPKI(t)
	f := ccpfake.New(t, pki)
	cert, key := pki.Issue(t, "coffer-app", false)
	f.Allow("Coffer", "coffer-app")
	return &harness{fake: f, proxy: keystoretest.NewProxy(t, strings.TrimPrefix(f.URL, "https://")), cert: cert, key: key, ca: pki.CAFile}
}

func (h *harness) config() Config {
	return Config{URL: "https://" + h.proxy.Addr(), AppID: "Coffer", CertFile: h.cert, KeyFile: h.key, CAFile: h.ca}
}

func (h *harness) open(t *testing.T, cfg Config, max int, hashKey []byte) *Keystore {
	t.Helper()
	ks, err := New(cfg, keystore.Options{Name: "ccp", MaxValueSize: max, Timeout: 5 * time.Second, HashKey: hashKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func split(item string) (string, string) { s, o, _ := strings.Cut(item, "/"); return s, o }

func (h *harness) Name() string         { return "ccp" }
func (h *harness) Item(n string) string { return "Suite/" + n }
func (h *harness) Open(t *testing.T, max int) keystore.Keystore {
	return h.open(t, h.config(), max, nil)
}
func (h *harness) Put(t *testing.T, item string, f map[string]string) {
	s, o := split(item)
	h.fake.Set(s, o, string(keystoretest.JSON(f)))
}
func (h *harness) PutRaw(t *testing.T, item string, v []byte) {
	s, o := split(item)
	h.fake.Set(s, o, string(v))
}
func (h *harness) UTF8Only()                        {}
func (h *harness) Delete(t *testing.T, item string) { s, o := split(item); h.fake.Delete(s, o) }
func (h *harness) BreakAccess(t *testing.T)         { h.fake.Allow("Coffer", "") }
func (h *harness) RestoreAccess(t *testing.T)       { h.fake.Allow("Coffer", "coffer-app") }
func (h *harness) Down(t *testing.T)                { h.proxy.Down() }
func (h *harness) Up(t *testing.T)                  { h.proxy.Up(t) }
func (h *harness) BadItems() []string {
	return []string{"NoObject", "/Obj", "Safe/", "Sa:fe/Obj", strings.Repeat("s", 29) + "/o", "Safe/a b"}
}

func TestConformance(t *testing.T) { keystoretest.Run(t, newHarness(t)) }

func TestVersionIsKeyedHash(t *testing.T) {
	h := newHarness(t)
	h.fake.Set("S", "db", "hunter2")
	k1 := h.open(t, h.config(), 0, bytes.Repeat([]byte{1}, 32))
	k2 := h.open(t, h.config(), 0, bytes.Repeat([]byte{1}, 32))
	k3 := h.open(t, h.config(), 0, bytes.Repeat([]byte{2}, 32))
	v1, _ := k1.Read(context.Background(), "S/db")
	v2, _ := k2.Read(context.Background(), "S/db")
	v3, _ := k3.Read(context.Background(), "S/db")
	if v1.Version != v2.Version || v1.Version == v3.Version {
		t.Errorf("versions %q %q %q: want equal under one key, different under another", v1.Version, v2.Version, v3.Version)
	}
	plain := sha256.Sum256([]byte("hunter2"))
	if strings.Contains(v1.Version, "hunter2") || strings.Contains(v1.Version, hex.EncodeToString(plain[:8])) {
		t.Errorf("version %q reveals the content (or is its plain hash)", v1.Version)
	}
}

func TestPasswordChangeInProgressIsNotGone(t *testing.T) {
	h := newHarness(t)
	h.fake.Set("S", "db", "v")
	h.fake.Changing("S", "db", true)
	ks := h.open(t, h.config(), 0, nil)
	_, err := ks.Read(context.Background(), "S/db")
	if !errors.Is(err, keystore.ErrUnreachable) || keystore.Gone(err) || !strings.Contains(err.Error(), "APPAP282E") {
		t.Fatalf("Read during a password change: %v", err)
	}
	h.fake.Set("S", "ok", "v")
	st, err := ks.Check(context.Background(), []string{"S/db", "S/ok"})
	if err != nil || !errors.Is(st["S/db"].Err, keystore.ErrUnreachable) || st["S/ok"].Err != nil {
		t.Fatalf("Check during a password change: %+v, %v (want the other item checked)", st, err)
	}
}

// TestClientCertificateRequired: a certificate from another CA is refused
// in the TLS handshake, which is access lost, not unreachable.
func TestClientCertificateRequired(t *testing.T) {
	h := newHarness(t)
	h.fake.Set("S", "db", "v")
	other := keystoretest.NewPKI(t)
	cert, key := other.Issue(t, "coffer-app", false)
	cfg := h.config()
	cfg.CertFile, cfg.KeyFile = cert, key
	ks := h.open(t, cfg, 0, nil)
	_, err := ks.Read(context.Background(), "S/db")
	if !errors.Is(err, keystore.ErrAccessLost) {
		t.Fatalf("Read with a certificate of another CA: %v, want ErrAccessLost", err)
	}
	// A certificate of the right CA but another name: the AppID refuses it.
	cert, key = h.fake.PKI.Issue(t, "intruder", false)
	cfg.CertFile, cfg.KeyFile = cert, key
	ks = h.open(t, cfg, 0, nil)
	if _, err := ks.Read(context.Background(), "S/db"); !errors.Is(err, keystore.ErrAccessLost) || !strings.Contains(err.Error(), "APPAP306E") {
		t.Fatalf("Read with another application's certificate: %v", err)
	}
}

func TestCheckCost(t *testing.T) {
	h := newHarness(t)
	var items []string
	for i := range 20 {
		o := "o" + strings.Repeat("x", i)
		h.fake.Set("S", o, "v")
		items = append(items, "S/"+o)
	}
	ks := h.open(t, h.config(), 0, nil)
	if _, err := ks.Check(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if n := h.fake.Calls(); n != 20 {
		t.Errorf("checking 20 accounts took %d requests, want 20 (CCP has no cheaper call)", n)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "https://ccp.example", AppID: "Coffer", CertFile: "c", KeyFile: "k"}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.URL = "http://ccp.example" }, "url"},
		{func(c *Config) { c.AppID = "a&b" }, "app_id"},
		{func(c *Config) { c.KeyFile = "" }, "cert_file and key_file"},
	} {
		c := ok
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c, err, tc.want)
		}
	}
}
