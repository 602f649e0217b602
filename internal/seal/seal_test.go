package seal

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
)

func testKey(t testing.TB, fill byte) *LocalKey {
	t.Helper()
	k, err := NewLocalKey(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 1)
	for _, tc := range []struct {
		name string
		size int
	}{{"empty", 0}, {"one byte", 1}, {"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			pt := bytes.Repeat([]byte{0xA5}, tc.size)
			aad := AAD("payments/db-password", 7)
			env, err := Seal(ctx, k, pt, aad)
			if err != nil {
				t.Fatal(err)
			}
			if env.KeyID != k.KeyID() {
				t.Errorf("KeyID = %q, want %q", env.KeyID, k.KeyID())
			}
			if tc.size > 16 && bytes.Contains(env.Ciphertext, pt) {
				t.Error("ciphertext contains the plaintext")
			}
			got, err := Open(ctx, k, env, aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pt) {
				t.Errorf("Open returned %d bytes, want the %d sealed", len(got), len(pt))
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 1)
	aad := AAD("a", 1)
	e1, _ := Seal(ctx, k, []byte("same"), aad)
	e2, _ := Seal(ctx, k, []byte("same"), aad)
	if bytes.Equal(e1.WrappedDEK, e2.WrappedDEK) || bytes.Equal(e1.Nonce, e2.Nonce) || bytes.Equal(e1.Ciphertext, e2.Ciphertext) {
		t.Error("two seals of the same value share a DEK, nonce or ciphertext")
	}
}

// TestFlippedBitFails flips every bit of each envelope field in turn (only
// sampled bytes of a large ciphertext) and checks that Open fails.
func TestFlippedBitFails(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 2)
	for _, size := range []int{64, 1 << 20} {
		pt := bytes.Repeat([]byte("s"), size)
		aad := AAD("app/token", 3)
		env, err := Seal(ctx, k, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		fields := []struct {
			name string
			get  func(*Envelope) []byte
		}{
			{"wrapped DEK", func(e *Envelope) []byte { return e.WrappedDEK }},
			{"nonce", func(e *Envelope) []byte { return e.Nonce }},
			{"ciphertext", func(e *Envelope) []byte { return e.Ciphertext }},
		}
		for _, f := range fields {
			t.Run(f.name, func(t *testing.T) {
				n := len(f.get(&env))
				for i := 0; i < n; i++ {
					if n > 4096 && i > 8 && i < n-8 && i%(n/8) != 0 {
						continue // sample large fields
					}
					for bit := 0; bit < 8; bit++ {
						f.get(&env)[i] ^= 1 << bit // flip in place, then back
						_, err := Open(ctx, k, env, aad)
						f.get(&env)[i] ^= 1 << bit
						if !errors.Is(err, ErrDecrypt) {
							t.Fatalf("size %d: flipped bit %d of byte %d: err = %v, want ErrDecrypt", size, bit, i, err)
						}
					}
				}
			})
		}
		if _, err := Open(ctx, k, env, aad); err != nil {
			t.Fatalf("size %d: unaltered envelope: %v", size, err)
		}
	}
}

func TestTruncatedOrEmptyFieldsFail(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 2)
	aad := AAD("x", 1)
	env, _ := Seal(ctx, k, []byte("value"), aad)
	for _, tc := range []struct {
		name string
		mod  func(*Envelope)
	}{
		{"no wdek", func(e *Envelope) { e.WrappedDEK = nil }},
		{"short wdek", func(e *Envelope) { e.WrappedDEK = e.WrappedDEK[:len(e.WrappedDEK)-1] }},
		{"long wdek", func(e *Envelope) { e.WrappedDEK = append(e.WrappedDEK, 0) }},
		{"no nonce", func(e *Envelope) { e.Nonce = nil }},
		{"short nonce", func(e *Envelope) { e.Nonce = e.Nonce[:11] }},
		{"long nonce", func(e *Envelope) { e.Nonce = append(e.Nonce, 0) }},
		{"no ct", func(e *Envelope) { e.Ciphertext = nil }},
		{"short ct", func(e *Envelope) { e.Ciphertext = e.Ciphertext[:len(e.Ciphertext)-1] }},
		{"no kid", func(e *Envelope) { e.KeyID = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := cloneEnv(env)
			tc.mod(&e)
			if _, err := Open(ctx, k, e, aad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
		})
	}
}

func TestAADSwapFails(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 3)
	env, err := Seal(ctx, k, []byte("value of A"), AAD("team/a", 5))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		aad  []byte
	}{
		{"other secret", AAD("team/b", 5)},
		{"other version", AAD("team/a", 6)},
		{"version zero", AAD("team/a", 0)},
		{"nil aad", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(ctx, k, env, tc.aad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
		})
	}
	if _, err := Open(ctx, k, env, AAD("team/a", 5)); err != nil {
		t.Fatalf("right aad: %v", err)
	}
}

func TestAADIsUnambiguous(t *testing.T) {
	seen := map[string]string{}
	for _, tc := range []struct {
		name    string
		version uint64
	}{
		{"a", 1}, {"a", 256}, {"a\x00", 1}, {"", 1}, {"", 0}, {"ab", 1},
		{"a\x00\x00\x00\x00\x00\x00\x00\x01", 0}, {"b", 1}, {"a/b", 1},
	} {
		got := string(AAD(tc.name, tc.version))
		if !strings.HasPrefix(got, "coffer/secret/v1\x00") {
			t.Errorf("AAD(%q, %d) lacks the domain prefix", tc.name, tc.version)
		}
		key := tc.name + "#" + hex.EncodeToString([]byte{byte(tc.version)})
		if prev, dup := seen[got]; dup {
			t.Errorf("AAD(%q, %d) equals AAD of %s", tc.name, tc.version, prev)
		}
		seen[got] = key
	}
}

func TestWrongMasterKey(t *testing.T) {
	ctx := context.Background()
	k1, k2 := testKey(t, 4), testKey(t, 5)
	if k1.KeyID() == k2.KeyID() {
		t.Fatal("different keys have the same KeyID")
	}
	pt := []byte("plaintext-marker")
	aad := AAD("s", 1)
	env, _ := Seal(ctx, k1, pt, aad)

	_, err := Open(ctx, k2, env, aad)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
	for _, want := range []string{k1.KeyID(), k2.KeyID(), "wrong key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// An envelope relabelled with k2's id still fails, at Unwrap.
	env.KeyID = k2.KeyID()
	_, err = Open(ctx, k2, env, aad)
	if !errors.Is(err, ErrDecrypt) {
		t.Fatalf("relabelled: err = %v, want ErrDecrypt", err)
	}
	checkNoSecrets(t, err, pt, bytes.Repeat([]byte{4}, KeySize), bytes.Repeat([]byte{5}, KeySize))
}

// checkNoSecrets fails if err's text contains any of secrets, raw or in hex.
func checkNoSecrets(t *testing.T, err error, secrets ...[]byte) {
	t.Helper()
	msg := err.Error()
	for _, s := range secrets {
		if strings.Contains(msg, string(s)) || strings.Contains(msg, hex.EncodeToString(s)) {
			t.Errorf("error message %q reveals secret bytes", msg)
		}
	}
}

// wrapper is a KeyWrapper that fails or returns odd DEKs, to test Open's checks.
type wrapper struct {
	*LocalKey
	unwrapErr error
	dek       []byte
}

func (w wrapper) Unwrap(ctx context.Context, b []byte) ([]byte, error) {
	if w.unwrapErr != nil {
		return nil, w.unwrapErr
	}
	if w.dek != nil {
		return append([]byte(nil), w.dek...), nil
	}
	return w.LocalKey.Unwrap(ctx, b)
}

func TestOpenWrapperFailures(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 6)
	aad := AAD("s", 1)
	env, _ := Seal(ctx, k, []byte("v"), aad)
	for _, tc := range []struct {
		name string
		w    wrapper
	}{
		{"backend error", wrapper{LocalKey: k, unwrapErr: errors.New("kms unavailable")}},
		{"short dek", wrapper{LocalKey: k, dek: make([]byte, 16)}},
		{"wrong dek", wrapper{LocalKey: k, dek: make([]byte, 32)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(ctx, tc.w, env, aad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
		})
	}
}

func TestEnvelopeJSON(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 7)
	aad := AAD("s", 9)
	env, _ := Seal(ctx, k, []byte("json me"), aad)
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"kid"`, `"wdek"`, `"nonce"`, `"ct"`} {
		if !bytes.Contains(b, []byte(field)) {
			t.Errorf("JSON %s lacks %s", b, field)
		}
	}
	var back Envelope
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := Open(ctx, k, back, aad)
	if err != nil || string(got) != "json me" {
		t.Fatalf("Open after JSON = %q, %v", got, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 8)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				aad := AAD("s", uint64(i*100+j))
				env, err := Seal(ctx, k, []byte("v"), aad)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := Open(ctx, k, env, aad); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func cloneEnv(e Envelope) Envelope {
	return Envelope{
		KeyID:      e.KeyID,
		WrappedDEK: bytes.Clone(e.WrappedDEK),
		Nonce:      bytes.Clone(e.Nonce),
		Ciphertext: bytes.Clone(e.Ciphertext),
	}
}

// FuzzOpen feeds Open arbitrary envelopes: it must never panic, and must
// fail with ErrDecrypt for anything but a genuine sealed envelope.
func FuzzOpen(f *testing.F) {
	ctx := context.Background()
	k, _ := NewLocalKey(bytes.Repeat([]byte{9}, KeySize))
	aad := AAD("fuzz", 1)
	env, _ := Seal(ctx, k, []byte("fuzz value"), aad)
	f.Add(env.WrappedDEK, env.Nonce, env.Ciphertext, aad)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Add([]byte{1}, make([]byte, 12), make([]byte, 16), []byte("x"))
	f.Fuzz(func(t *testing.T, wdek, nonce, ct, a []byte) {
		e := Envelope{KeyID: k.KeyID(), WrappedDEK: wdek, Nonce: nonce, Ciphertext: ct}
		pt, err := Open(ctx, k, e, a)
		if err == nil {
			// Only a genuine envelope opens. (Fuzz workers rerun the setup
			// and seal anew, so compare what it opens to, not its bytes.)
			if !bytes.Equal(a, aad) || string(pt) != "fuzz value" {
				t.Fatal("Open accepted an altered envelope")
			}
			return
		}
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("err = %v, want ErrDecrypt", err)
		}
	})
}

func BenchmarkSeal1KiB(b *testing.B) {
	ctx := context.Background()
	k := testKey(b, 10)
	pt := make([]byte, 1<<10)
	aad := AAD("bench/secret", 1)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(ctx, k, pt, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen1KiB(b *testing.B) {
	ctx := context.Background()
	k := testKey(b, 10)
	aad := AAD("bench/secret", 1)
	env, err := Seal(ctx, k, make([]byte, 1<<10), aad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(ctx, k, env, aad); err != nil {
			b.Fatal(err)
		}
	}
}
