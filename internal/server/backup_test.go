package server

import (
	"encoding/base64"
	"net/http"
	"path/filepath"
	"testing"

	"coffer/internal/catalog"
	"coffer/internal/etcdtest"
)

// The backup docs/ha.md describes, done as an operator would: etcdctl
// snapshot save while the server runs, a change after it, the keyspace
// lost and restored from the snapshot with etcdutl, the server started
// again on it with its own data dir. It serves what the snapshot held, the
// later change is gone, and its audit trail (ahead of the head anchored in
// the snapshot) is accepted and verifies.
func TestBackupAndRestoreOfTheEtcdKeyspace(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	key := filepath.Join(t.TempDir(), "master.key")
	cfg := etcdConfig(t, c, "backup", key)
	s := startEtcdServer(t, cfg)
	admin := readToken(t, cfg.DataDir)
	cl := newClient(t, s, admin)
	put := func(cl *client, name, v string) catalog.SecretMeta {
		var m catalog.SecretMeta
		cl.must("PUT", "/v1/secrets/"+name, map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(v))}, &m)
		return m
	}
	put(cl, "app/db", "backup-test-v1")
	put(cl, "app/db", "backup-test-v2")

	snap := c.Snapshot(t)
	put(cl, "app/db", "backup-test-v3")
	put(cl, "app/after", "backup-test-after")
	s.stop()

	c.Restore(t, snap)
	s2 := startEtcdServer(t, cfg)
	cl2 := newClient(t, s2, admin)
	var meta catalog.SecretMeta
	cl2.must("GET", "/v1/secrets/app/db", nil, &meta)
	if meta.Current != 2 {
		t.Fatalf("after the restore app/db is at version %d, want 2 (the snapshot's)", meta.Current)
	}
	if code, body := cl2.do("GET", "/v1/secrets/app/after", nil); code != http.StatusNotFound {
		t.Fatalf("a secret created after the snapshot: %d %s", code, body)
	}
	var v struct {
		OK bool `json:"ok"`
	}
	cl2.must("GET", "/v1/audit/verify", nil, &v)
	if !v.OK {
		t.Fatal("the audit trail does not verify after the restore")
	}
	// Writes go on from the snapshot's state.
	if m := put(cl2, "app/db", "backup-test-v3b"); m.Current != 3 {
		t.Fatalf("the first write after the restore made version %d", m.Current)
	}
}
