package vault

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
	"coffer/internal/keystore/vault/vaulttest"
)

func TestHintItem(t *testing.T) {
	for _, c := range []struct {
		typ, op, path, err string
		want               string
	}{
		{"response", "update", "secret/data/payments/db", "", "payments/db"},
		{"response", "create", "secret/data/a", "", "a"},
		{"response", "delete", "secret/metadata/payments/db", "", "payments/db"},
		{"response", "update", "secret/destroy/x/y", "", "x/y"},
		{"response", "update", "secret/undelete/x", "", "x"},
		{"response", "patch", "secret/data/x", "", "x"},
		{"request", "update", "secret/data/x", "", ""},                   // the request half: wait for the outcome
		{"response", "update", "secret/data/x", "permission denied", ""}, // a failed write changed nothing
		{"response", "read", "secret/data/x", "", ""},
		{"response", "list", "secret/metadata/", "", ""},
		{"response", "update", "other/data/x", "", ""},
		{"response", "update", "secret/config", "", ""},
		{"response", "update", "secret/data/../x", "", ""},
		{"response", "update", "secret/data/", "", ""},
		{"response", "update", "secretx/data/y", "", ""},
	} {
		var e auditEntry
		e.Type, e.Request.Operation, e.Request.Path, e.Error = c.typ, c.op, c.path, c.err
		got, ok := hintItem("secret", e)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("%+v: %q %v, want %q", c, got, ok, c.want)
		}
	}
}

// A real Vault with a file audit device and a socket audit device that
// feeds Coffer's listener: a KV write is a hint for its item, within a
// second, and the feed survives garbage on the socket.
func TestHintsFromVaultSocketAuditDevice(t *testing.T) {
	s := vaulttest.Start(t)
	s.Policy(t, "coffer-read", readPolicy)
	tok := vaulttest.WriteFile(t, "token", s.Token(t, []string{"coffer-read"}, map[string]any{"ttl": "1h"})+"\n")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ks, err := New(Config{Address: s.Addr, TokenFile: tok, KVMount: "secret", MaxRetries: -1, ChangeHints: &Hints{Listen: addr}},
		keystore.Options{Name: "vault"})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	sys := s.Root.Sys()
	if err := sys.EnableAuditWithOptions("file", &api.EnableAuditOptions{Type: "file",
		Options: map[string]string{"file_path": filepath.Join(t.TempDir(), "audit.log")}}); err != nil {
		t.Fatal(err)
	}
	if err := sys.EnableAuditWithOptions("coffer", &api.EnableAuditOptions{Type: "socket",
		Options: map[string]string{"address": addr, "socket_type": "tcp"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.DisableAudit("coffer") })
	// Garbage from another local process is skipped.
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Write([]byte("not json\n{\"type\":\"response\",\"request\":{\"operation\":\"update\",\"path\":\"secret/data/../etc\"}}\n"))
		c.Close()
	}
	if _, err := s.Root.KVv2("secret").Put(context.Background(), "payments/db", map[string]any{"password": "hint-probe-value"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case items := <-ks.Hints():
			if len(items) == 1 && items[0] == "payments/db" {
				return
			}
			if strings.Contains(strings.Join(items, ","), "..") {
				t.Fatalf("a malformed path became a hint: %v", items)
			}
		case <-deadline:
			t.Fatal("no hint for the KV write")
		}
	}
}

func TestHintsConfig(t *testing.T) {
	base := Config{Address: "https://vault.example:8200", TokenFile: "/t", KVMount: "secret"}
	for listen, ok := range map[string]bool{"127.0.0.1:9201": true, "[::1]:9201": true, ":9201": false, "9201": false, "": false} {
		c := base
		c.ChangeHints = &Hints{Listen: listen}
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("listen %q: %v", listen, err)
		}
	}
}
