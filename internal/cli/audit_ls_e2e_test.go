package cli_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/test/testkit"
)

// coffer audit ls: a negative --limit is a usage error (it used to return
// everything), the new filters reach the server, and --follow prints
// records as they are written.
func TestCLIAuditLs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real server")
	}
	srv := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	srv.MustCLI(t, "v1", "secret", "put", "shop/db")
	if _, errOut, code := srv.CLI(t, "", "audit", "ls", "--limit", "-3"); code != 2 || !strings.Contains(errOut, "--limit") {
		t.Fatalf("--limit -3: exit %d: %s", code, errOut)
	}
	if _, errOut, code := srv.CLI(t, "", "audit", "ls", "--action", "secret.rm"); code == 0 || !strings.Contains(errOut, "secret.delete") {
		t.Fatalf("--action secret.rm: exit %d: %s", code, errOut)
	}
	out := srv.MustCLI(t, "", "audit", "ls", "--action", "secret.*", "--result", "ok", "--until", "2999-01-01T00:00:00Z", "-o", "json")
	var evs []map[string]any
	if err := json.Unmarshal([]byte(out), &evs); err != nil || len(evs) != 1 || evs[0]["action"] != "secret.put" {
		t.Fatalf("filtered listing: %v %s", err, out)
	}

	cmd := exec.Command(testkit.Bin(t, "coffer"), "audit", "ls", "--follow", "--action", "secret.put", "-o", "json")
	cmd.Env = append(os.Environ(), "COFFER_ADDR=https://"+srv.Addr, "COFFER_TOKEN="+srv.Token, "COFFER_CACERT="+srv.CA)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case l, ok := <-lines:
			var ev map[string]any
			if !ok || json.Unmarshal([]byte(l), &ev) != nil {
				t.Fatalf("follow: line %q (open %v)", l, ok)
			}
			return ev
		case <-time.After(15 * time.Second):
			t.Fatal("follow printed nothing")
		}
		return nil
	}
	if ev := next(); ev["object"] != "secret:shop/db" {
		t.Fatalf("first followed record: %v", ev)
	}
	srv.MustCLI(t, "v2", "secret", "put", "shop/api")
	if ev := next(); ev["object"] != "secret:shop/api" {
		t.Fatalf("new followed record: %v", ev)
	}
}
