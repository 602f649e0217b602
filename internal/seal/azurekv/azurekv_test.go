package azurekv

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/keystore/azure/azurefake"
	"coffer/internal/seal"
	"coffer/internal/seal/sealtest"
)

func setup(t *testing.T) (*azurefake.Server, func(key string) *Wrapper) {
	f := azurefake.New(t, "tok")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, f.CertPEM(), 0o600)
	return f, func(key string) *Wrapper {
		w, err := New(Config{VaultURL: f.URL, Key: key, CAFile: ca, DisableChallengeResourceVerification: true,
			Credential: &azurefake.Credential{Token: "tok"}, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
}

func TestSuite(t *testing.T) {
	f, open := setup(t)
	f.CreateKey("coffer-kek")
	f.CreateKey("other-kek")
	sealtest.Run(t, open("coffer-kek"), open("other-kek"))
	if f.Calls("wrapkey") == 0 || f.Calls("unwrapkey") == 0 {
		t.Error("the fake saw no wrapkey/unwrapkey calls")
	}
}

// TestRotation: a new key version wraps new data keys; data keys wrapped
// under the old version still unwrap with it.
func TestRotation(t *testing.T) {
	ctx := context.Background()
	f, open := setup(t)
	v1 := f.CreateKey("coffer-kek")
	w := open("coffer-kek")
	env, err := seal.Seal(ctx, w, []byte("before rotation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env.WrappedDEK[:2+len(v1)], []byte(v1)) {
		t.Fatal("wrapped data key does not record the key version")
	}
	v2 := f.CreateKey("coffer-kek")
	env2, err := seal.Seal(ctx, w, []byte("after rotation"), nil)
	if err != nil || !bytes.Contains(env2.WrappedDEK, []byte(v2)) {
		t.Fatalf("Seal after rotation: %v (want version %s)", err, v2)
	}
	for _, e := range []seal.Envelope{env, env2} {
		if _, err := seal.Open(ctx, w, e, nil); err != nil {
			t.Fatalf("Open: %v", err)
		}
	}
	// Tampering with the recorded version: ErrDecrypt, no request with it.
	bad := bytes.Clone(env.WrappedDEK)
	bad[2] = '/'
	if _, err := w.Unwrap(ctx, bad); !errors.Is(err, seal.ErrDecrypt) || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("Unwrap with a malformed version: %v", err)
	}
}

func TestDeletedKeyAndNoAccess(t *testing.T) {
	ctx := context.Background()
	f, open := setup(t)
	f.CreateKey("coffer-kek")
	w := open("coffer-kek")
	env, _ := seal.Seal(ctx, w, []byte("v"), nil)
	f.Deny(true)
	if _, err := w.Wrap(ctx, make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Wrap when denied: %v", err)
	}
	f.Deny(false)
	f.DeleteKey("coffer-kek")
	if _, err := seal.Open(ctx, w, env, nil); !errors.Is(err, seal.ErrDecrypt) {
		t.Errorf("Open after the key was deleted: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{VaultURL: "https://x.vault.azure.net"}, {VaultURL: "http://x", Key: "k"}, {VaultURL: "https://x.vault.azure.net", Key: "a/b"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}
