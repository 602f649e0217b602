package seal

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func ringKey(t *testing.T, b byte) *LocalKey {
	t.Helper()
	k, err := NewLocalKey(bytes.Repeat([]byte{b}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRing(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey, other := ringKey(t, 1), ringKey(t, 2), ringKey(t, 3)
	oldEnv, err := Seal(ctx, oldKey, []byte("old"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRing(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != newKey.KeyID() || len(r.KeyIDs()) != 2 {
		t.Fatalf("ids %v", r.KeyIDs())
	}
	// Opens an envelope of the previous key (needs the Keyring hook in Open).
	if pt, err := Open(ctx, r, oldEnv, []byte("aad")); err != nil || string(pt) != "old" {
		t.Fatalf("Open old with ring: %q, %v", pt, err)
	}
	// Seals under the primary only.
	env, err := Seal(ctx, r, []byte("new"), nil)
	if err != nil || env.KeyID != newKey.KeyID() {
		t.Fatalf("Seal with ring: %s, %v", env.KeyID, err)
	}
	if _, err := Open(ctx, oldKey, env, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("old key opens a new envelope: %v", err)
	}
	// A key the ring does not hold is still refused.
	otherEnv, _ := Seal(ctx, other, []byte("x"), nil)
	if _, err := Open(ctx, r, otherEnv, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("ring opened another key's envelope: %v", err)
	}
	if _, err := NewRing(newKey, ringKey(t, 2)); err == nil {
		t.Fatal("duplicate key id accepted")
	}
	if err := Probe(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := Probe(ctx, r); !errors.Is(err, ErrClosed) {
		t.Fatalf("Probe after Close: %v", err)
	}
}
