package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// TestCLIEndToEnd drives the coffer CLI against a real coffer-server process.
func TestCLIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	s := testkit.StartServer(t, filepath.Join(dir, "data"))
	const value = "cli-e2e-value-5e2b9a"

	out := s.MustCLI(t, value+"\n", "secret", "put", "payments/db-password")
	if !strings.Contains(out, "version 1") {
		t.Fatalf("put: %s", out)
	}
	s.MustCLI(t, value+"-2", "secret", "put", "payments/db-password")
	os.WriteFile(filepath.Join(dir, "key.pem"), []byte("file-value"), 0o600)
	s.MustCLI(t, "", "secret", "put", "payments/tls-key", "--from-file", filepath.Join(dir, "key.pem"))
	s.MustCLI(t, "", "secret", "put", "payments/api-key", "--generate", "32")

	out = s.MustCLI(t, "", "secret", "ls")
	for _, n := range []string{"payments/db-password", "payments/tls-key", "payments/api-key"} {
		if !strings.Contains(out, n) {
			t.Fatalf("ls lacks %s:\n%s", n, out)
		}
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "secret", "ls", "-o", "json")), &list); err != nil || len(list) != 3 {
		t.Fatalf("ls -o json: %v %v", list, err)
	}
	out = s.MustCLI(t, "", "secret", "show", "payments/db-password")
	if !strings.Contains(out, "Current:  2") {
		t.Fatalf("show:\n%s", out)
	}

	s.MustCLI(t, "", "bind", "create", "web-db", "--secret", "payments/db-password", "--selector", "app=web,env in (prod,staging)", "--mode", "0440", "--gid", "1000")
	out = s.MustCLI(t, "", "bind", "ls")
	if !strings.Contains(out, "web-db") || !strings.Contains(out, "0440") {
		t.Fatalf("bind ls:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "test", "--labels", "app=web,env=prod", "--image", "registry/x:1.2")
	if !strings.Contains(out, "payments/db-password") {
		t.Fatalf("bind test:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "test", "--labels", "app=web,env=dev")
	if !strings.HasPrefix(out, "No binding gives this container a secret.") || !strings.Contains(out, "web-db (payments/db-password): selector: env in (prod,staging) is not met: the container has env=dev") {
		t.Fatalf("bind test env=dev:\n%s", out)
	}

	// Tokens: created token printed alone; a viewer cannot write.
	tok := strings.TrimSpace(s.MustCLI(t, "", "token", "create", "--role", "viewer", "--ttl", "1h"))
	if strings.ContainsAny(tok, " \n") || !strings.HasPrefix(tok, "coffer_") {
		t.Fatalf("token create printed %q", tok)
	}
	viewer := *s
	viewer.Token = tok
	if _, errOut, code := viewer.CLI(t, "x", "secret", "put", "a"); code != 4 || !strings.Contains(errOut, "403") {
		t.Fatalf("viewer put: exit %d: %s", code, errOut)
	}
	if !strings.Contains(s.MustCLI(t, "", "token", "ls"), "viewer") {
		t.Fatal("token ls lacks the viewer token")
	}

	// Usage errors exit 2; not found 3; unauthenticated 4.
	for _, args := range [][]string{{"secret", "put"}, {"secret", "ls", "-o", "xml"}, {"secret", "put", "Bad Name"}, {"bind", "create", "x", "--secret", "a"}, {"secret", "--nope"}} {
		if _, _, code := s.CLI(t, "x", args...); code != 2 {
			t.Errorf("coffer %v: exit %d, want 2", args, code)
		}
	}
	if _, _, code := s.CLI(t, "", "secret", "show", "does/not-exist"); code != 3 {
		t.Errorf("show missing: exit %d, want 3", code)
	}
	wrong := *s
	wrong.Token = "coffer_0000000000000000_AAAA"
	if _, errOut, code := wrong.CLI(t, "", "secret", "ls"); code != 4 || !strings.Contains(errOut, "401") {
		t.Errorf("wrong token: exit %d %s", code, errOut)
	}

	// Audit: query and verify, online and offline.
	out = s.MustCLI(t, "", "audit", "ls", "--secret", "payments/db-password", "-o", "json")
	var evs []map[string]any
	if err := json.Unmarshal([]byte(out), &evs); err != nil || len(evs) == 0 {
		t.Fatalf("audit ls: %v %s", err, out)
	}
	if !strings.HasPrefix(s.MustCLI(t, "", "audit", "verify"), "ok:") {
		t.Fatal("audit verify failed")
	}
	if !strings.HasPrefix(s.MustCLI(t, "", "audit", "verify", "--file", filepath.Join(s.DataDir, "audit.log")), "ok:") {
		t.Fatal("offline audit verify failed")
	}

	// A tampered copy of the trail fails verification: an edited, a
	// removed and a reordered record.
	raw, err := os.ReadFile(filepath.Join(s.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) < 4 {
		t.Fatalf("only %d audit records", len(lines))
	}
	tampered := map[string]string{
		"edited":    strings.Replace(string(raw), `"result":"ok"`, `"result":"denied"`, 1),
		"removed":   strings.Join(append(append([]string{}, lines[:1]...), lines[2:]...), ""),
		"reordered": strings.Join(append([]string{lines[1], lines[0]}, lines[2:]...), ""),
	}
	for what, text := range tampered {
		p := filepath.Join(dir, what+".log")
		os.WriteFile(p, []byte(text), 0o600)
		if out, errOut, code := s.CLI(t, "", "audit", "verify", "--file", p); code != 1 || !strings.Contains(errOut, "tampered") {
			t.Errorf("%s trail: exit %d: %s%s", what, code, out, errOut)
		}
	}

	s.MustCLI(t, "", "bind", "rm", "web-db")
	s.MustCLI(t, "", "secret", "rm", "payments/db-password")
	if _, _, code := s.CLI(t, "", "secret", "show", "payments/db-password"); code != 3 {
		t.Fatal("deleted secret still shown")
	}

	// --help has examples everywhere.
	for _, args := range [][]string{{"secret", "put"}, {"bind", "create"}, {"token", "create"}, {"audit", "ls"}, {"agent", "rm"}} {
		out := s.MustCLI(t, "", append(args, "--help")...)
		if !strings.Contains(out, "Examples:") {
			t.Errorf("coffer %v --help has no examples", args)
		}
	}

	// Nothing of the value in the server's logs or data dir.
	s.Stop()
	assertAbsent(t, value, s.Logs(), s.DataDir)
}

// TestServerRestartAndBadDataDir: a restart reuses everything; a wrong
// master key or a corrupt store is a clear error and destroys nothing.
func TestServerRestartAndBadDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := filepath.Join(t.TempDir(), "data")
	s := testkit.StartServer(t, dir)
	s.MustCLI(t, "v", "secret", "put", "a")
	s.Stop()
	s2 := testkit.StartServer(t, dir)
	if s2.Token != s.Token || !strings.Contains(s2.MustCLI(t, "", "secret", "ls"), "a") {
		t.Fatal("restart lost state")
	}
	s2.Stop()

	// Wrong master key.
	other := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(other, make([]byte, 32), 0o600)
	before := snapshot(t, dir)
	out := runServer(t, dir, "--master-key-file", other)
	if !strings.Contains(out, "master key") {
		t.Fatalf("wrong key: %s", out)
	}
	// Missing master key for an existing store.
	os.Rename(filepath.Join(dir, "master.key"), filepath.Join(dir, "master.key.bak"))
	if out := runServer(t, dir); !strings.Contains(out, "missing") {
		t.Fatalf("missing key: %s", out)
	}
	os.Rename(filepath.Join(dir, "master.key.bak"), filepath.Join(dir, "master.key"))
	if after := snapshot(t, dir); after != before {
		t.Fatalf("a failed start changed the data dir:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Corrupt store.
	os.WriteFile(filepath.Join(dir, "coffer.db"), []byte(strings.Repeat("garbage!", 1024)), 0o600)
	if out := runServer(t, dir); !strings.Contains(out, "corrupt") && !strings.Contains(out, "invalid") {
		t.Fatalf("corrupt store: %s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "coffer.db")); string(b) != strings.Repeat("garbage!", 1024) {
		t.Fatal("corrupt store was modified")
	}
}
