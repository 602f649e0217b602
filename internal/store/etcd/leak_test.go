package etcd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"coffer/internal/etcdtest"
	"coffer/internal/seal"
	"coffer/internal/store"
)

// A value sealed the way Coffer's catalog seals it reaches etcd as
// ciphertext only: neither the data directory nor a full dump of the key
// space holds the plaintext, in clear or in base64.
func TestNoPlaintextInEtcd(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	plaintext := []byte("coffer-leak-canary-" + hex.EncodeToString(randBytes(t, 16)))
	forms := [][]byte{plaintext, []byte(base64.StdEncoding.EncodeToString(plaintext)), []byte(base64.RawURLEncoding.EncodeToString(plaintext))}

	kw, err := seal.NewLocalKey(randBytes(t, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	const name = "db/leak-check-password"
	env, err := seal.Seal(context.Background(), kw, plaintext, seal.AAD(name, 1))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	key := "sv/" + name + "\x0000000000000000000001"
	err = b.Update(context.Background(), func(tx store.Tx) error { return tx.Put(key, stored) })
	if err != nil {
		t.Fatal(err)
	}
	// What comes back opens to the plaintext: the stored bytes are the envelope.
	var got seal.Envelope
	err = b.View(context.Background(), func(tx store.Tx) error {
		v, err := tx.Get(key)
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &got)
	})
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := seal.Open(context.Background(), kw, got, seal.AAD(name, 1)); err != nil || !bytes.Equal(pt, plaintext) {
		t.Fatalf("the stored envelope does not open: %v", err)
	}

	dump := c.Etcdctl(t, "get", "--prefix", "")
	if !bytes.Contains(dump, []byte(base64.StdEncoding.EncodeToString(env.Ciphertext))) {
		t.Fatal("the dump lacks the ciphertext: the search below would prove nothing")
	}
	for _, f := range forms {
		if bytes.Contains(dump, f) {
			t.Fatalf("etcdctl get --prefix \"\" shows the plaintext (%q)", f)
		}
	}

	// Stop the member so that everything it holds is on disk, then search
	// every file of its data directory.
	if err := c.Members[0].Stop(); err != nil {
		t.Fatal(err)
	}
	sawKey := false
	err = filepath.WalkDir(c.Members[0].DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(name)) {
			sawKey = true
		}
		for _, f := range forms {
			if bytes.Contains(data, f) {
				t.Errorf("%s holds the plaintext (%q)", p, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawKey {
		t.Fatal("no file of the data directory holds the key name: the search proved nothing")
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
