// Package sealtest is the conformance suite for seal.KeyWrapper
// implementations (the local key file and the KMS-backed master keys): the
// expectations of internal/seal's own tests, in one place.
package sealtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"coffer/internal/seal"
)

// Run checks kw. other is a master key of the same kind that is not kw (a
// different key, or the same key under another context), or nil if the
// harness has none: data keys wrapped by one must not unwrap with the
// other.
func Run(t *testing.T, kw, other seal.KeyWrapper) {
	ctx := context.Background()
	t.Run("KeyID", func(t *testing.T) {
		id := kw.KeyID()
		if id == "" || id != kw.KeyID() {
			t.Fatalf("KeyID %q is empty or unstable", id)
		}
		if other != nil && other.KeyID() == id {
			t.Errorf("two different master keys share KeyID %q", id)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		dek := randomDEK(t)
		w, err := kw.Wrap(ctx, dek)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(w, dek) || bytes.Contains(w, []byte(hex.EncodeToString(dek))) {
			t.Error("wrapped data key contains the data key")
		}
		got, err := kw.Unwrap(ctx, w)
		if err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("Unwrap = %d bytes, %v; want the data key back", len(got), err)
		}
		w2, err := kw.Wrap(ctx, dek)
		if err != nil || bytes.Equal(w, w2) {
			t.Errorf("two wraps of one data key are equal (or failed: %v)", err)
		}
	})
	t.Run("SealOpen", func(t *testing.T) {
		aad := seal.AAD("payments/db-password", 3)
		env, err := seal.Seal(ctx, kw, []byte("value-marker"), aad)
		if err != nil {
			t.Fatal(err)
		}
		if env.KeyID != kw.KeyID() {
			t.Errorf("envelope KeyID %q, want %q", env.KeyID, kw.KeyID())
		}
		pt, err := seal.Open(ctx, kw, env, aad)
		if err != nil || string(pt) != "value-marker" {
			t.Fatalf("Open = %q, %v", pt, err)
		}
		if _, err := seal.Open(ctx, kw, env, seal.AAD("payments/db-password", 4)); !errors.Is(err, seal.ErrDecrypt) {
			t.Errorf("Open with another version's AAD: %v", err)
		}
	})
	t.Run("Tampered", func(t *testing.T) {
		dek := randomDEK(t)
		w, err := kw.Wrap(ctx, dek)
		if err != nil {
			t.Fatal(err)
		}
		// One flipped bit at up to 24 spread positions (each is a call to
		// the KMS), then truncations and garbage.
		step := max(1, len(w)/24)
		for i := 0; i < len(w); i += step {
			bad := bytes.Clone(w)
			bad[i] ^= 0x01
			checkDecrypt(t, kw, bad, dek, fmt.Sprintf("bit flipped in byte %d of %d", i, len(w)))
		}
		for _, n := range []int{0, 1, len(w) / 2, len(w) - 1} {
			checkDecrypt(t, kw, bytes.Clone(w[:n]), dek, fmt.Sprintf("truncated to %d bytes", n))
		}
		checkDecrypt(t, kw, bytes.Repeat([]byte{0xA5}, len(w)), dek, "garbage")
	})
	if other != nil {
		t.Run("WrongKey", func(t *testing.T) {
			dek := randomDEK(t)
			w, err := kw.Wrap(ctx, dek)
			if err != nil {
				t.Fatal(err)
			}
			checkDecrypt(t, other, w, dek, "unwrapped with another master key")
			env, err := seal.Seal(ctx, kw, []byte("value-marker"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := seal.Open(ctx, other, env, nil); !errors.Is(err, seal.ErrDecrypt) {
				t.Errorf("Open with another master key: %v", err)
			}
			env.KeyID = other.KeyID() // relabelled: fails at Unwrap instead
			if _, err := seal.Open(ctx, other, env, nil); !errors.Is(err, seal.ErrDecrypt) {
				t.Errorf("Open of a relabelled envelope: %v", err)
			}
		})
	}
	t.Run("Concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 3 {
					dek := randomDEK(t)
					w, err := kw.Wrap(ctx, dek)
					if err != nil {
						t.Error(err)
						return
					}
					if got, err := kw.Unwrap(ctx, w); err != nil || !bytes.Equal(got, dek) {
						t.Errorf("concurrent Unwrap: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// checkDecrypt wants Unwrap of bad to fail with ErrDecrypt, without the
// data key in the message.
func checkDecrypt(t *testing.T, kw seal.KeyWrapper, bad, dek []byte, what string) {
	t.Helper()
	got, err := kw.Unwrap(context.Background(), bad)
	if err == nil {
		if bytes.Equal(got, dek) {
			t.Fatalf("%s: Unwrap still returned the data key", what)
		}
		t.Fatalf("%s: Unwrap succeeded", what)
	}
	if !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("%s: err = %v, want seal.ErrDecrypt", what, err)
	}
	msg := err.Error()
	if strings.Contains(msg, string(dek)) || strings.Contains(msg, hex.EncodeToString(dek)) {
		t.Fatalf("%s: error reveals the data key: %s", what, msg)
	}
}

func randomDEK(t *testing.T) []byte {
	dek := make([]byte, seal.DEKSize)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	return dek
}
