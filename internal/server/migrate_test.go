package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/catalog"
	"coffer/internal/etcdtest"
)

// coffer-server migrate copies a bolt data dir into an empty etcd prefix:
// a server on etcd then serves its secrets, tokens and CA (agents enrolled
// before keep working). Run again, it writes nothing; into a prefix that
// holds anything else it refuses and writes nothing.
func TestMigrateBoltToEtcd(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	// A bolt server with a secret, a binding and its bootstrap token.
	cfg := Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "bolt")
	cfg.Listen = "127.0.0.1:0"
	bs := startEtcdServer(t, cfg) // any Config runs; this one is bolt
	tok := readToken(t, cfg.DataDir)
	cl := newClient(t, bs, tok)
	for _, v := range []string{"v1", "v2"} {
		cl.must("PUT", "/v1/secrets/app/db", map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(v))}, nil)
	}
	cl.must("PUT", "/v1/bindings/web-db", map[string]string{"secret": "app/db", "selector": "app=web"}, nil)
	bs.stop()

	to := etcdConfig(t, c, "moved", filepath.Join(cfg.DataDir, "master.key"))
	ctx := context.Background()
	st, err := Migrate(ctx, to, cfg.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Copied == 0 || st.Copied != st.Keys || st.Already {
		t.Fatalf("first run: %+v", st)
	}
	// An interrupted run (here: the last keys and the mark missing) goes on.
	c.Etcdctl(t, "del", "moved/d/meta/migrated")
	c.Etcdctl(t, "del", "--prefix", "moved/d/tomb/")
	c.Etcdctl(t, "del", "--prefix", "moved/d/token/")
	st, err = Migrate(ctx, to, cfg.DataDir, nil)
	if err != nil || st.Already || st.Copied != 1 {
		t.Fatalf("run after an interruption: %+v, %v", st, err)
	}
	before := keysUnder(t, c, "moved")
	st, err = Migrate(ctx, to, cfg.DataDir, nil)
	if err != nil || !st.Already || st.Copied != 0 {
		t.Fatalf("second run: %+v, %v", st, err)
	}
	if after := keysUnder(t, c, "moved"); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatal("the second run changed etcd")
	}

	es := startEtcdServer(t, to)
	var meta catalog.SecretMeta
	newClient(t, es, tok).must("GET", "/v1/secrets/app/db", nil, &meta)
	if meta.Current != 2 {
		t.Fatalf("migrated secret at version %d", meta.Current)
	}
	var bindings []catalog.Binding
	newClient(t, es, tok).must("GET", "/v1/bindings", nil, &bindings)
	if len(bindings) != 1 {
		t.Fatalf("migrated bindings: %+v", bindings)
	}
	boltCA, _ := os.ReadFile(filepath.Join(cfg.DataDir, "ca.pem"))
	etcdCA, _ := os.ReadFile(filepath.Join(to.DataDir, "ca.pem"))
	if !bytes.Equal(boltCA, etcdCA) {
		t.Fatal("the server on etcd has another CA than the migrated data dir")
	}
	if _, err := os.Stat(filepath.Join(to.DataDir, tokenFile)); err == nil {
		t.Fatal("a new bootstrap token was made after the migration")
	}

	// Into a prefix that holds another installation: refused, nothing written.
	other := etcdConfig(t, c, "busy", filepath.Join(t.TempDir(), "k"))
	startEtcdServer(t, other).stop()
	busy := keysUnder(t, c, "busy")
	into := to
	into.Etcd.Prefix = "busy"
	if _, err := Migrate(ctx, into, cfg.DataDir, nil); err == nil || !strings.Contains(err.Error(), "non-empty prefix") {
		t.Fatalf("migrate into a non-empty prefix = %v", err)
	}
	if got := keysUnder(t, c, "busy"); strings.Join(got, ",") != strings.Join(busy, ",") {
		t.Fatal("a refused migration wrote to etcd")
	}
}
