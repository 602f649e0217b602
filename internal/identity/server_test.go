package identity

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func serial(c tls.Certificate) string { return c.Leaf.SerialNumber.String() }

func TestLoadOrIssueServerCert(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Now()
	first, err := ca.loadOrIssueServerCert(dir, []string{"coffer.example.com", "10.0.0.5"}, 90*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"coffer.example.com", "localhost"}) {
		t.Errorf("DNS names %v", leaf.DNSNames)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	slices.Sort(ips)
	if !slices.Equal(ips, []string{"10.0.0.5", "127.0.0.1", "::1"}) {
		t.Errorf("IPs %v", ips)
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, ServerKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("server key mode %v", fi.Mode().Perm())
	}

	for _, tc := range []struct {
		name    string
		sans    []string
		now     time.Time
		reissue bool
	}{
		{"same", []string{"coffer.example.com", "10.0.0.5"}, now, false},
		{"same in other order, case, duplicates", []string{"10.0.0.5", "Coffer.Example.COM.", "localhost", "coffer.example.com", "::1"}, now, false},
		{"still 2/3 left", []string{"coffer.example.com", "10.0.0.5"}, now.Add(29 * time.Hour), false},
		{"within last third", []string{"coffer.example.com", "10.0.0.5"}, now.Add(61 * time.Hour), true},
		{"DNS name added", []string{"coffer.example.com", "10.0.0.5", "vault.example.com"}, now, true},
		{"IP changed", []string{"coffer.example.com", "10.0.0.6"}, now, true},
		{"name removed", []string{"10.0.0.5"}, now, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ca.loadOrIssueServerCert(dir, tc.sans, 90*time.Hour, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if reissued := serial(got) != serial(first); reissued != tc.reissue {
				t.Fatalf("reissued = %v, want %v", reissued, tc.reissue)
			}
			// Put the first certificate back for the next case.
			if tc.reissue {
				writeServerPair(t, dir, first)
			}
		})
	}
}

func writeServerPair(t *testing.T, dir string, c tls.Certificate) {
	t.Helper()
	kp, err := keyPEM(c.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ServerKeyFile), kp, 0o600)
	os.WriteFile(filepath.Join(dir, ServerCertFile), certPEM(c.Certificate[0]), 0o644)
}

func TestServerCertReissuedForNewCA(t *testing.T) {
	dir := t.TempDir()
	first, err := newTestCA(t).LoadOrIssueServerCert(dir, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca2 := newTestCA(t)
	got, err := ca2.LoadOrIssueServerCert(dir, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if serial(got) == serial(first) || got.Leaf.CheckSignatureFrom(ca2.Cert) != nil {
		t.Fatal("server certificate of another CA kept")
	}
}

func TestServerCertDamagedFilesReissued(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name   string
		break_ func(dir string)
	}{
		{"no cert", func(dir string) { os.Remove(filepath.Join(dir, ServerCertFile)) }},
		{"no key", func(dir string) { os.Remove(filepath.Join(dir, ServerKeyFile)) }},
		{"garbage cert", func(dir string) { os.WriteFile(filepath.Join(dir, ServerCertFile), []byte("x"), 0o644) }},
		{"key readable by others", func(dir string) { os.Chmod(filepath.Join(dir, ServerKeyFile), 0o644) }},
		{"other key", func(dir string) {
			other, _ := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
			kp, _ := keyPEM(other.PrivateKey.(crypto.Signer))
			os.WriteFile(filepath.Join(dir, ServerKeyFile), kp, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first, err := ca.LoadOrIssueServerCert(dir, nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			tc.break_(dir)
			got, err := ca.LoadOrIssueServerCert(dir, nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if serial(got) == serial(first) {
				t.Fatal("not reissued")
			}
			if fi, _ := os.Stat(filepath.Join(dir, ServerKeyFile)); fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %v", fi.Mode().Perm())
			}
		})
	}
}

func TestParseSANs(t *testing.T) {
	for _, bad := range []string{"a b", "exa mple.com", "http://x", "a..b", "-a.com", "x/y", "[::1]"} {
		if _, _, err := parseSANs([]string{bad}); err == nil {
			t.Errorf("parseSANs(%q) accepted", bad)
		}
	}
	dns, ips, err := parseSANs([]string{"*.svc.local", " host ", "", "::ffff:10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dns, []string{"*.svc.local", "host", "localhost"}) {
		t.Errorf("dns %v", dns)
	}
	if len(ips) != 3 || !slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.1.2.3")) }) {
		t.Errorf("ips %v", ips)
	}
}

func TestServerCertGetter(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var logs bytes.Buffer
	get, err := ca.serverCertGetter(dir, []string{"x.example"}, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)), clock)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := get(nil)
	c2, _ := get(nil)
	if c1 != c2 || !slices.Contains(c1.Leaf.DNSNames, "x.example") {
		t.Fatal("getter does not serve one stable certificate")
	}
	// In its last third, the certificate is replaced at the next handshake.
	mu.Lock()
	now = now.Add(45 * time.Minute)
	mu.Unlock()
	c3, _ := get(nil)
	if serial(*c3) == serial(*c1) || !bytes.Equal(c3.Certificate[0], mustRead(t, filepath.Join(dir, ServerCertFile))) {
		t.Fatal("expiring certificate not reissued")
	}
	if !strings.Contains(logs.String(), "server certificate reissued") {
		t.Errorf("logs: %s", logs.String())
	}
	// A failing reissue keeps serving the current certificate and logs.
	mu.Lock()
	now = now.Add(45 * time.Minute)
	mu.Unlock()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() == 0 {
		// root ignores directory permissions: block the rename instead.
		os.Remove(filepath.Join(dir, ServerCertFile))
		os.Mkdir(filepath.Join(dir, ServerCertFile), 0o700)
		os.WriteFile(filepath.Join(dir, ServerCertFile, "x"), nil, 0o600)
	}
	c4, err := get(nil)
	if err != nil || c4 != c3 {
		t.Fatalf("failed reissue: got %v, %v; want the current certificate", c4, err)
	}
	if !strings.Contains(logs.String(), "cannot reissue") {
		t.Errorf("failure not logged: %s", logs.String())
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	c, err := readCertFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.Raw
}
