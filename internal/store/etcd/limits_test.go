package etcd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"coffer/internal/etcdtest"
	"coffer/internal/seal"
	"coffer/internal/store"
)

func count(t *testing.T, b *Backend) int {
	t.Helper()
	n := 0
	err := b.View(context.Background(), func(tx store.Tx) error {
		return tx.List("", func(string, []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func putN(b *Backend, n int, prefix string) error {
	return b.Update(context.Background(), func(tx store.Tx) error {
		for i := range n {
			if err := tx.Put(fmt.Sprintf("%s%04d", prefix, i), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
}

// One Update is one etcd Txn: over the server's --max-txn-ops it fails
// with ErrTooManyOps and writes nothing, whether this package or the server
// notices.
func TestMaxTxnOps(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	if err := putN(b, DefaultMaxTxnOps, "ok/"); err != nil {
		t.Fatalf("%d puts: %v", DefaultMaxTxnOps, err)
	}
	err := putN(b, DefaultMaxTxnOps+1, "big/")
	if !errors.Is(err, ErrTooManyOps) || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("%d puts = %v, want ErrTooManyOps naming the flag", DefaultMaxTxnOps+1, err)
	}
	// Deleting also bumps the delete clock: 128 deletes are 129 ops.
	err = b.Update(context.Background(), func(tx store.Tx) error {
		return tx.List("ok/", func(k string, _ []byte) error { return tx.Delete(k) })
	})
	if !errors.Is(err, ErrTooManyOps) {
		t.Fatalf("%d deletes = %v, want ErrTooManyOps", DefaultMaxTxnOps, err)
	}
	// Reads are checked at commit, one guard per key read.
	err = b.Update(context.Background(), func(tx store.Tx) error {
		for i := range DefaultMaxTxnOps + 1 {
			tx.Get(fmt.Sprintf("r/%d", i))
		}
		return tx.Put("r/x", []byte("v"))
	})
	if !errors.Is(err, ErrTooManyOps) || !strings.Contains(err.Error(), "checks 129") {
		t.Fatalf("%d reads = %v, want ErrTooManyOps", DefaultMaxTxnOps+1, err)
	}
	// A Coffer configured above the server's limit: the server refuses.
	loose := open(t, c, func(cfg *Config) { cfg.MaxTxnOps = 300 })
	if err := putN(loose, 200, "big/"); !errors.Is(err, ErrTooManyOps) || !strings.Contains(err.Error(), "server refused") {
		t.Fatalf("200 puts past the server's limit = %v, want ErrTooManyOps", err)
	}
	if n := count(t, b); n != DefaultMaxTxnOps {
		t.Fatalf("%d keys after the refused updates, want %d", n, DefaultMaxTxnOps)
	}
	// Raised on both sides, it works.
	c2 := etcdtest.Start(t, etcdtest.Options{Flags: []string{"--max-txn-ops=300"}})
	if err := putN(open(t, c2, func(cfg *Config) { cfg.MaxTxnOps = 300 }), 300, "big/"); err != nil {
		t.Fatalf("300 puts with --max-txn-ops=300: %v", err)
	}
}

// sealed is a value as Coffer's catalog stores it: a seal.Envelope in JSON.
func sealed(t *testing.T, plaintext []byte, name string) []byte {
	t.Helper()
	mk := make([]byte, seal.KeySize)
	rand.Read(mk)
	kw, err := seal.NewLocalKey(mk)
	if err != nil {
		t.Fatal(err)
	}
	env, err := seal.Seal(context.Background(), kw, plaintext, seal.AAD(name, 1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A sealed 1 MiB value (Coffer's default max_value_size) fits etcd's
// default request size; larger ones need --max-request-bytes raised on
// both sides, and fail with ErrTooLarge, writing nothing, until it is.
func TestMaxRequestBytes(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	meta := bytes.Repeat([]byte("m"), 2000) // the secret's metadata record
	write := func(b *Backend, value []byte) error {
		return b.Update(context.Background(), func(tx store.Tx) error {
			if err := tx.Put("sv/big\x0000000000000000000001", value); err != nil {
				return err
			}
			return tx.Put("s/big", meta)
		})
	}
	oneMiB := sealed(t, bytes.Repeat([]byte{'x'}, 1<<20), "big")
	if err := write(b, oneMiB); err != nil {
		t.Fatalf("sealed 1 MiB value (%d bytes stored): %v", len(oneMiB), err)
	}
	if v, err := get(t, b, "sv/big\x0000000000000000000001"); err != nil || v != string(oneMiB) {
		t.Fatalf("read back: %d bytes, %v", len(v), err)
	}
	for _, size := range []int{2 << 20, 3 << 20} {
		err := write(b, make([]byte, size))
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--max-request-bytes") {
			t.Fatalf("%d bytes = %v, want ErrTooLarge naming the flag", size, err)
		}
	}
	// Configured above the server's limit: the server refuses, both
	// through etcd's own check (just above 1.5 MiB) and through gRPC's
	// message limit (well above).
	loose := open(t, c, func(cfg *Config) { cfg.MaxRequestBytes = 8 << 20 })
	for _, size := range []int{1700 << 10, 3 << 20} {
		if err := write(loose, make([]byte, size)); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "server refused") {
			t.Fatalf("%d bytes past the server's limit = %v, want ErrTooLarge", size, err)
		}
	}
	if n := count(t, b); n != 2 {
		t.Fatalf("%d keys, want the 2 of the first write", n)
	}
	if v, _ := get(t, b, "sv/big\x0000000000000000000001"); v != string(oneMiB) {
		t.Fatal("a refused update changed the stored value")
	}
	// Raised on both sides: a sealed 4 MiB value.
	c2 := etcdtest.Start(t, etcdtest.Options{Flags: []string{"--max-request-bytes=8388608"}})
	big := open(t, c2, func(cfg *Config) { cfg.MaxRequestBytes = 8 << 20 })
	fourMiB := sealed(t, bytes.Repeat([]byte{'y'}, 4<<20), "big")
	if err := write(big, fourMiB); err != nil {
		t.Fatalf("sealed 4 MiB with --max-request-bytes=8388608: %v", err)
	}
	if v, err := get(t, big, "sv/big\x0000000000000000000001"); err != nil || v != string(fourMiB) {
		t.Fatalf("read back: %d bytes, %v", len(v), err)
	}
}
