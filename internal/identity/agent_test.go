package identity

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewCSR(t *testing.T) {
	key, err := NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	if csr.Subject.CommonName != "coffer-agent:node-1" || len(csr.URIs) != 1 || csr.URIs[0].String() != "coffer://agent/node-1" {
		t.Errorf("CSR names %q %v", csr.Subject.CommonName, csr.URIs)
	}
	if _, err := NewCSR(key, "Bad Name"); !errors.Is(err, ErrInvalidAgentName) {
		t.Errorf("bad name: %v", err)
	}
}

func TestSaveLoadAgentIdentity(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "agent")
	c := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	key := c.PrivateKey.(*ecdsa.PrivateKey)
	if err := SaveAgentIdentity(dir, c.Certificate[0], key); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]os.FileMode{AgentCertFile: 0o644, AgentKeyFile: 0o600, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v err %v, want %v", file, fi.Mode().Perm(), err, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%d files in dir, want 2", len(entries))
	}
	got, err := LoadAgentIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Leaf == nil || !got.Leaf.Equal(c.Leaf) || !sameKey(key, got.Leaf.PublicKey) || !key.Equal(got.PrivateKey) {
		t.Fatal("loaded identity differs")
	}

	// Replace with a renewed identity.
	c2 := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	if err := SaveAgentIdentity(dir, c2.Certificate[0], c2.PrivateKey.(*ecdsa.PrivateKey)); err != nil {
		t.Fatal(err)
	}
	if got, _ := LoadAgentIdentity(dir); !got.Leaf.Equal(c2.Leaf) {
		t.Fatal("renewed identity not loaded")
	}
}

func TestSaveAgentIdentityRefuses(t *testing.T) {
	ca := newTestCA(t)
	c := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	other, _ := NewAgentKey()
	server, _ := ca.LoadOrIssueServerCert(t.TempDir(), nil, time.Hour)
	for _, tc := range []struct {
		name string
		der  []byte
		key  *ecdsa.PrivateKey
	}{
		{"other key", c.Certificate[0], other},
		{"nil key", c.Certificate[0], nil},
		{"garbage", []byte("x"), other},
		{"server certificate", server.Certificate[0], server.PrivateKey.(*ecdsa.PrivateKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := SaveAgentIdentity(dir, tc.der, tc.key); err == nil {
				t.Fatal("saved")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatal("wrote files")
			}
		})
	}
}

func TestLoadAgentIdentityRefuses(t *testing.T) {
	ca := newTestCA(t)
	c := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	c2 := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	k2, _ := keyPEM(c2.PrivateKey.(*ecdsa.PrivateKey))
	for _, tc := range []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"no cert", func(dir string) { os.Remove(filepath.Join(dir, AgentCertFile)) }, "no such file"},
		{"no key", func(dir string) { os.Remove(filepath.Join(dir, AgentKeyFile)) }, "no such file"},
		{"key readable by others", func(dir string) { os.Chmod(filepath.Join(dir, AgentKeyFile), 0o644) }, "chmod 600"},
		{"mismatched", func(dir string) { os.WriteFile(filepath.Join(dir, AgentKeyFile), k2, 0o600) }, "does not belong"},
		{"garbage key", func(dir string) { os.WriteFile(filepath.Join(dir, AgentKeyFile), []byte("x"), 0o600) }, "no private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := SaveAgentIdentity(dir, c.Certificate[0], c.PrivateKey.(*ecdsa.PrivateKey)); err != nil {
				t.Fatal(err)
			}
			tc.setup(dir)
			_, err := LoadAgentIdentity(dir)
			if !errors.Is(err, ErrFiles) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrFiles mentioning %q", err, tc.want)
			}
		})
	}
}

// TestLoadAgentIdentityFinishesInterruptedSave simulates a crash between
// the two renames of SaveAgentIdentity: new key, old certificate, new
// certificate staged.
func TestLoadAgentIdentityFinishesInterruptedSave(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	old := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	if err := SaveAgentIdentity(dir, old.Certificate[0], old.PrivateKey.(*ecdsa.PrivateKey)); err != nil {
		t.Fatal(err)
	}
	renewed := issueAgent(t, ca, "node-1", time.Hour, time.Now())
	kp, _ := keyPEM(renewed.PrivateKey.(*ecdsa.PrivateKey))
	os.WriteFile(filepath.Join(dir, AgentKeyFile), kp, 0o600)
	os.WriteFile(filepath.Join(dir, AgentCertFile+nextSuffix), certPEM(renewed.Certificate[0]), 0o644)

	got, err := LoadAgentIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Leaf.Equal(renewed.Leaf) {
		t.Fatal("did not complete the interrupted save")
	}
	if _, err := os.Stat(filepath.Join(dir, AgentCertFile+nextSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Error("staged file left behind")
	}
	if again, err := LoadAgentIdentity(dir); err != nil || !again.Leaf.Equal(renewed.Leaf) {
		t.Fatalf("reload: %v", err)
	}
}
