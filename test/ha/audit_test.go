package ha

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/test/testkit"
)

// cli runs the coffer CLI against server i with the admin token.
func (c *cluster) cli(i int, args ...string) (string, string, int) {
	c.t.Helper()
	caFile := filepath.Join(c.t.TempDir(), "ca.pem")
	os.WriteFile(caFile, c.caPEM, 0o644)
	cmd := exec.Command(testkit.Bin(c.t, "coffer"), args...)
	cmd.Env = append(os.Environ(), "COFFER_ADDR=https://"+c.servers[i].addr, "COFFER_TOKEN="+c.token, "COFFER_CACERT="+caFile,
		"XDG_CONFIG_HOME="+c.t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

type chainResult struct {
	Server string `json:"server"`
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
}

func (c *cluster) verify(i int) ([]chainResult, string, int) {
	c.t.Helper()
	out, errOut, code := c.cli(i, "audit", "verify", "-o", "json")
	var rs []chainResult
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		c.t.Fatalf("audit verify -o json: %v: %s %s", err, out, errOut)
	}
	return rs, errOut, code
}

// Each server keeps its own chain: coffer audit ls asked of any server
// merges the records of all of them in time order; coffer audit verify
// checks every chain, up to the head anchored in etcd. A server killed
// with SIGKILL loses no record: while it is down verify fails (its chain
// cannot be checked), after its restart every chain verifies. A server
// restarted with an empty data dir starts a new chain, and verify reports
// the old one as lost.
func TestAuditChainsAcrossServers(t *testing.T) {
	c := newCluster(t, 3)
	for i := range 3 {
		c.put(i, "app/s"+string(rune('0'+i)), "x")
	}
	out, errOut, code := c.cli(1, "audit", "ls", "--action", "secret.put", "-o", "json")
	if code != 0 {
		t.Fatalf("audit ls: exit %d: %s", code, errOut)
	}
	var evs []audit.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatal(err)
	}
	servers := map[string]bool{}
	for _, e := range evs {
		servers[e.Server] = true
	}
	if len(evs) != 3 || len(servers) != 3 || servers[""] {
		t.Fatalf("merged secret.put records: %d from servers %v, want 3 from 3", len(evs), servers)
	}
	if !sort.SliceIsSorted(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) }) {
		t.Fatal("merged records not in time order")
	}
	rs, errOut, code := c.verify(0)
	if code != 0 || len(rs) != 3 {
		t.Fatalf("verify: exit %d, %+v %s", code, rs, errOut)
	}

	// SIGKILL server 2 right after a write through it.
	c.put(2, "app/s2", "y")
	c.servers[2].proc.Kill()
	if rs, _, code := c.verify(0); code == 0 {
		t.Fatalf("verify passed with a server down: %+v", rs)
	}
	c.start(2)
	rs, errOut, code = c.verify(0)
	if code != 0 {
		t.Fatalf("verify after the killed server's restart: exit %d %+v %s", code, rs, errOut)
	}
	out, _, _ = c.cli(0, "audit", "ls", "--action", "secret.put", "-o", "json")
	if n := strings.Count(out, `"action": "secret.put"`); n != 4 {
		t.Fatalf("%d secret.put records after the kill, want 4", n)
	}

	// Server 1 loses its data dir.
	c.servers[1].proc.Stop()
	os.RemoveAll(c.servers[1].dataDir)
	c.start(1)
	rs, _, code = c.verify(0)
	lost := 0
	for _, r := range rs {
		if !r.OK && strings.Contains(r.Error, "is lost") {
			lost++
		}
	}
	if code == 0 || lost != 1 || len(rs) != 4 {
		t.Fatalf("verify after a data dir was lost: exit %d, %+v", code, rs)
	}
}
