package transit

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore/vault/vaulttest"
	"coffer/internal/seal"
	"coffer/internal/seal/sealtest"
)

const policy = `
path "transit/encrypt/KEY" { capabilities = ["update"] }
path "transit/decrypt/KEY" { capabilities = ["update"] }
path "transit/rewrap/KEY"  { capabilities = ["update"] }
`

// setup mounts Transit on a real Vault dev server and makes a key and a
// token that may use only that key.
func setup(t *testing.T, s *vaulttest.Server, key string) Config {
	t.Helper()
	if _, err := s.Root.Logical().Write("transit/keys/"+key, map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	s.Policy(t, "use-"+key, strings.ReplaceAll(policy, "KEY", key))
	tok := s.Token(t, []string{"use-" + key}, map[string]any{"ttl": "1h"})
	return Config{Address: s.Addr, TokenFile: vaulttest.WriteFile(t, key+".token", tok), Key: key, MaxRetries: -1}
}

func open(t *testing.T, cfg Config) *Wrapper {
	t.Helper()
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func newServer(t *testing.T) *vaulttest.Server {
	s := vaulttest.Start(t)
	if err := s.Root.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSuite(t *testing.T) {
	s := newServer(t)
	sealtest.Run(t, open(t, setup(t, s, "coffer-kek")), open(t, setup(t, s, "other-kek")))
}

func TestRotationAndRewrap(t *testing.T) {
	ctx := context.Background()
	s := newServer(t)
	w := open(t, setup(t, s, "coffer-kek"))
	aad := seal.AAD("payments/db", 1)
	env, err := seal.Seal(ctx, w, []byte("before rotation"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(env.WrappedDEK, []byte("vault:v1:")) {
		t.Fatalf("wrapped DEK %q is not a v1 Transit ciphertext", env.WrappedDEK[:9])
	}
	if _, err := s.Root.Logical().Write("transit/keys/coffer-kek/rotate", nil); err != nil {
		t.Fatal(err)
	}
	// The old data key still opens; the key id did not change.
	if pt, err := seal.Open(ctx, w, env, aad); err != nil || string(pt) != "before rotation" {
		t.Fatalf("Open after rotation: %q, %v", pt, err)
	}
	rewrapped, err := w.Rewrap(ctx, env.WrappedDEK)
	if err != nil || !bytes.HasPrefix(rewrapped, []byte("vault:v2:")) {
		t.Fatalf("Rewrap = %q, %v; want a v2 ciphertext", rewrapped, err)
	}
	// Retire version 1: only the rewrapped data key opens.
	if _, err := s.Root.Logical().Write("transit/keys/coffer-kek/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Open(ctx, w, env, aad); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("Open of a v1 data key below min_decryption_version: %v, want ErrDecrypt", err)
	}
	env.WrappedDEK = rewrapped
	if pt, err := seal.Open(ctx, w, env, aad); err != nil || string(pt) != "before rotation" {
		t.Fatalf("Open of the rewrapped envelope: %q, %v", pt, err)
	}
	if _, err := w.Rewrap(ctx, []byte("not a ciphertext")); !errors.Is(err, seal.ErrDecrypt) {
		t.Errorf("Rewrap of garbage: %v", err)
	}
}

// TestNoAccessIsNotSilent: a token without the policy cannot wrap, and an
// unwrap it cannot do fails (Open reports ErrDecrypt) without a data key.
func TestNoAccess(t *testing.T) {
	ctx := context.Background()
	s := newServer(t)
	cfg := setup(t, s, "coffer-kek")
	w := open(t, cfg)
	wrapped, err := w.Wrap(ctx, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TokenFile = vaulttest.WriteFile(t, "nopolicy", s.Token(t, []string{"default"}, nil))
	nw := open(t, cfg)
	if _, err := nw.Wrap(ctx, make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Wrap without the policy: %v", err)
	}
	if _, err := nw.Unwrap(ctx, wrapped); err == nil {
		t.Error("Unwrap without the policy succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Address: "https://v:8200", TokenFile: "t"},
		{Address: "https://v:8200", TokenFile: "t", Key: "a/b"},
		{Address: "http://v:8200", TokenFile: "t", Key: "k"},
		{Address: "https://v:8200", Key: "k"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
	c := Config{Address: "https://v:8200", TokenFile: "t", Key: "k"}
	if err := c.Validate(); err != nil || c.Mount != "transit" {
		t.Errorf("Validate = %v, mount %q", err, c.Mount)
	}
}
