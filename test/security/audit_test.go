package security_test

import (
	"bytes"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/test/testkit"
)

// Cutting records off the tail of audit.log while the server is stopped
// used to go unnoticed: the server started and verify passed. The chain's
// head is now anchored in the store at every commit, so the server refuses
// to start and changes nothing in the data dir.
func TestAuditTailCutWhileStoppedIsRefused(t *testing.T) {
	srv, admin := start(t)
	for i := range 3 {
		admin.PutSecret(t, "shop/db", []byte{byte('a' + i)})
	}
	srv.Stop()
	path := filepath.Join(srv.DataDir, "audit.log")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	cut := bytes.Join(lines[:len(lines)-2], nil)
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, srv.DataDir)

	p := testkit.Start(t, testkit.Bin(t, "coffer-server"), "--data-dir", srv.DataDir, "--listen", testkit.FreeAddr(t))
	deadline := time.Now().Add(20 * time.Second)
	for !p.Exited() {
		if time.Now().After(deadline) {
			p.Kill()
			t.Fatalf("the server started on a cut audit trail:\n%s", p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if logs := p.Logs(); !strings.Contains(logs, "audit") {
		t.Fatalf("the refusal does not say why:\n%s", logs)
	}
	if after := snapshot(t, srv.DataDir); !equalSnapshots(before, after) {
		t.Fatal("the refused start changed the data dir")
	}
}

// A client that connects and never finishes its TLS handshake (or its
// request) used to hold its socket for as long as it liked. The server now
// drops it within its handshake deadline (10 s).
func TestSlowClientIsDisconnected(t *testing.T) {
	t.Parallel()
	srv, _ := start(t)
	c, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the server sent data to a client that said nothing")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a silent connection open for 30 s")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("a silent connection was dropped only after %v", d)
	}
}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
