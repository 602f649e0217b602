package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, created, err := LoadOrCreateCA(dir)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	c := ca.Cert
	if c.Subject.CommonName != "Coffer CA" || !c.IsCA || !c.MaxPathLenZero ||
		c.PublicKeyAlgorithm != x509.ECDSA || c.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("CA certificate: CN %q IsCA %v alg %v", c.Subject.CommonName, c.IsCA, c.PublicKeyAlgorithm)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < CAValidity || life > CAValidity+2*time.Minute {
		t.Errorf("CA lifetime %v, want about %v", life, CAValidity)
	}
	if c.CheckSignatureFrom(c) != nil {
		t.Error("CA is not self-signed")
	}
	for file, want := range map[string]os.FileMode{CACertFile: 0o644, CAKeyFile: 0o600, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v err %v, want %v", file, fi.Mode().Perm(), err, want)
		}
	}
	if !bytes.Contains(ca.CertPEM, []byte("BEGIN CERTIFICATE")) {
		t.Error("CertPEM is not PEM")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("CA dir holds %d entries, want 2 (no temporary files left)", len(entries))
	}

	again, created, err := LoadOrCreateCA(dir)
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if !again.Cert.Equal(ca.Cert) || !sameKey(again.Key, ca.Cert.PublicKey) || !bytes.Equal(again.CertPEM, ca.CertPEM) {
		t.Error("reloaded CA differs")
	}
}

func TestLoadOrCreateCARefuses(t *testing.T) {
	other := newTestCA(t)
	otherKey, _ := keyPEM(other.Key)
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"only cert", func(dir string) { os.Remove(filepath.Join(dir, CAKeyFile)) }, "restore the CA key"},
		{"only key", func(dir string) { os.Remove(filepath.Join(dir, CACertFile)) }, "restore the CA certificate"},
		{"mismatched", func(dir string) { os.WriteFile(filepath.Join(dir, CAKeyFile), otherKey, 0o600) }, "do not belong together"},
		{"key readable by others", func(dir string) { os.Chmod(filepath.Join(dir, CAKeyFile), 0o640) }, "chmod 600"},
		{"garbage cert", func(dir string) { os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644) }, "no CERTIFICATE"},
		{"garbage key", func(dir string) { os.WriteFile(filepath.Join(dir, CAKeyFile), []byte("junk"), 0o600) }, "no private key"},
		{"leaf as CA", func(dir string) {
			leaf := issueAgent(t, other, "x", time.Hour, time.Now())
			os.WriteFile(filepath.Join(dir, CACertFile), certPEM(leaf.Certificate[0]), 0o644)
		}, "not a CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreateCA(dir); err != nil {
				t.Fatal(err)
			}
			tc.setup(dir)
			before := snapshot(t, dir)
			_, created, err := LoadOrCreateCA(dir)
			if err == nil || created || !errors.Is(err, ErrFiles) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (created %v), want ErrFiles mentioning %q", err, created, tc.want)
			}
			if after := snapshot(t, dir); !maps2Equal(before, after) {
				t.Fatal("a refused LoadOrCreateCA changed the CA directory")
			}
		})
	}
}

func TestLoadCAExpired(t *testing.T) {
	dir := t.TempDir()
	ca, _, _ := LoadOrCreateCA(dir)
	_, err := loadCA(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile), ca.Cert.NotAfter.Add(time.Second))
	if !errors.Is(err, ErrFiles) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v, want expired", err)
	}
}

// snapshot returns the names and contents of the files in dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		m[e.Name()] = string(b)
	}
	return m
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSignAgentCSRIgnoresRequestedNames(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewAgentKey()
	admin, _ := url.Parse("coffer://agent/admin")
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "root", Organization: []string{"Evil"}},
		DNSNames:       []string{"coffer-server", "localhost"},
		IPAddresses:    []net.IP{net.ParseIP("127.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{admin},
		ExtraExtensions: []pkix.Extension{{ // basic constraints: CA=true
			Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: mustASN1(t, struct{ IsCA bool }{true}),
		}},
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	der, err := ca.SignAgentCSR(csr, "node-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "coffer-agent:node-1" || len(c.Subject.Organization) != 0 {
		t.Errorf("subject %v", c.Subject)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "coffer://agent/node-1" {
		t.Errorf("URIs %v", c.URIs)
	}
	if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
		t.Errorf("requested names leaked in: %v %v %v", c.DNSNames, c.IPAddresses, c.EmailAddresses)
	}
	if c.IsCA || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(c.UnknownExtKeyUsage) != 0 {
		t.Errorf("IsCA %v EKU %v", c.IsCA, c.ExtKeyUsage)
	}
	for _, ext := range c.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) && bytes.Equal(ext.Value, tmpl.ExtraExtensions[0].Value) {
			t.Error("requested basic constraints copied")
		}
	}
	if bits := c.SerialNumber.BitLen(); bits > 128 || bits < 64 {
		t.Errorf("serial has %d bits", bits)
	}
	if d := before.Sub(c.NotBefore); d < time.Minute-time.Second || d > time.Minute+5*time.Second {
		t.Errorf("NotBefore %v before issue, want 1m", d)
	}
	if d := c.NotAfter.Sub(before); d < time.Hour-time.Second || d > time.Hour+5*time.Second {
		t.Errorf("NotAfter %v after issue, want 1h", d)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify as client: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Error("agent certificate verifies as a server certificate")
	}
	if name, err := AgentName(c); err != nil || name != "node-1" {
		t.Errorf("AgentName = %q, %v", name, err)
	}
}

func mustASN1(t *testing.T, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignAgentCSRKeysAndErrors(t *testing.T) {
	ca := newTestCA(t)
	csrFor := func(key any) []byte {
		b, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p256, _ := NewAgentKey()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good := csrFor(p256)
	tampered := bytes.Clone(good)
	tampered[len(tampered)-3] ^= 1 // inside the signature

	for _, tc := range []struct {
		name    string
		csr     []byte
		agent   string
		wantErr error
	}{
		{"P-256", good, "a", nil},
		{"Ed25519", csrFor(ed), "a", nil},
		{"P-384", csrFor(p384), "a", ErrBadCSR},
		{"RSA", csrFor(rsaKey), "a", ErrBadCSR},
		{"bad signature", tampered, "a", ErrBadCSR},
		{"garbage", []byte("not DER"), "a", ErrBadCSR},
		{"empty", nil, "a", ErrBadCSR},
		{"bad name", good, "Admin/../x", ErrInvalidAgentName},
		{"empty name", good, "", ErrInvalidAgentName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckAgentCSR(tc.csr); (tc.wantErr == ErrBadCSR) != errors.Is(err, ErrBadCSR) {
				t.Fatalf("CheckAgentCSR = %v, want ErrBadCSR %v", err, tc.wantErr == ErrBadCSR)
			}
			der, err := ca.SignAgentCSR(tc.csr, tc.agent, 0)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c, _ := x509.ParseCertificate(der)
			if life := c.NotAfter.Sub(c.NotBefore); life != DefaultAgentCertTTL+backdate {
				t.Errorf("ttl 0 gave lifetime %v, want default %v", life, DefaultAgentCertTTL)
			}
		})
	}
}

func TestSignAgentCSRNeverOutlivesCA(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewAgentKey()
	csr, _ := NewCSR(key, "n")
	der, err := ca.SignAgentCSR(csr, "n", 20*CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if c.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("agent certificate ends %v, after the CA %v", c.NotAfter, ca.Cert.NotAfter)
	}
}

// FuzzSignAgentCSR feeds arbitrary requests to the CA: no panic, and
// whatever is accepted comes out as a proper agent certificate.
func FuzzSignAgentCSR(f *testing.F) {
	ca, _, err := LoadOrCreateCA(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	key, _ := NewAgentKey()
	csr, _ := NewCSR(key, "seed")
	f.Add(csr)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, csr []byte) {
		der, err := ca.SignAgentCSR(csr, "fuzz", time.Hour)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("err = %v, want ErrBadCSR", err)
			}
			return
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if name, err := AgentName(c); err != nil || name != "fuzz" || len(c.DNSNames) != 0 {
			t.Fatalf("issued %q, %v, DNS %v", name, err, c.DNSNames)
		}
	})
}
