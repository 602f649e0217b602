package ha

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/audit"
)

// A rotation and a binding change written through one server reach an
// agent connected to another, through the etcd watch (the servers share no
// process and no in-process hook).
func TestChangesThroughAReachAnAgentOnB(t *testing.T) {
	c := newCluster(t, 3)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-b", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)

	c.put(0, "app/db", "v2") // through A
	waitValue(t, a, "c1", "db", "v2", 2*time.Second)
	c.put(2, "app/db", "v3") // through C
	waitValue(t, a, "c1", "db", "v3", 2*time.Second)

	// A new binding made on C gives the container a second file; removed
	// on A, the file goes.
	c.put(2, "app/api-key", "k1")
	c.bind(2, "web-key", "app/api-key", "app=web")
	waitValue(t, a, "c1", "api-key", "k1", 2*time.Second)
	c.must(0, "DELETE", "/v1/bindings/web-key", nil, nil)
	waitValue(t, a, "c1", "api-key", "", 2*time.Second)
	// An apply of several bindings in one transaction through C.
	c.put(2, "app/cert", "c1")
	c.put(2, "app/key", "k1")
	c.must(2, "POST", "/v1/apply", map[string]any{"bindings": []map[string]string{
		{"name": "web-cert", "secret": "app/cert", "selector": "app=web"},
		{"name": "web-tls-key", "secret": "app/key", "selector": "app=web"},
	}}, nil)
	waitValue(t, a, "c1", "cert", "c1", 2*time.Second)
	waitValue(t, a, "c1", "key", "k1", 2*time.Second)
	// Deleting the secret on C revokes it on B's container.
	c.must(2, "DELETE", "/v1/secrets/app/db", nil, nil)
	waitValue(t, a, "c1", "db", "", 2*time.Second)
}

// An agent removed on A has its stream on B closed, and a token revoked on
// A is refused on B, within a second.
func TestRevocationOnAIsEnforcedOnBWithinASecond(t *testing.T) {
	c := newCluster(t, 2)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-b", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)

	var tok struct {
		Token string `json:"token"`
		ID    string `json:"id"`
	}
	c.must(0, "POST", "/v1/tokens", map[string]string{"role": "viewer"}, &tok)
	admin := c.token
	c.token = tok.Token
	waitFor(t, time.Second, "the new token to work on B", func() bool { code, _ := c.api(1, "GET", "/v1/secrets", nil); return code == 200 })
	c.token = admin
	c.must(0, "DELETE", "/v1/tokens/"+tok.ID, nil, nil)
	c.token = tok.Token
	took := waitFor(t, time.Second, "the revoked token to be refused on B", func() bool {
		code, _ := c.api(1, "GET", "/v1/secrets", nil)
		return code == http.StatusUnauthorized
	})
	c.token = admin
	t.Logf("token refused on B %v after its revocation on A", took.Round(time.Millisecond))

	c.must(0, "DELETE", "/v1/agents/node-b", nil, nil)
	took = waitFor(t, time.Second, "B to close the removed agent's stream", func() bool { return !a.Stats().Connected })
	t.Logf("stream on B closed %v after the agent's removal on A", took.Round(time.Millisecond))
	// It cannot come back, on B or elsewhere.
	time.Sleep(1500 * time.Millisecond)
	if a.Stats().Connected {
		t.Fatal("the removed agent connected again")
	}
}

// The server an agent is on is killed (SIGKILL) in the middle of a run of
// rotations written through another server: the agent fails over and its
// container ends with the last version.
func TestKilledServerMidRotation(t *testing.T) {
	c := newCluster(t, 3)
	c.put(0, "app/db", "v0")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-1", 0, c.addrs())
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v0", 10*time.Second)
	victim := c.serverOf(a)
	if victim < 0 {
		t.Fatal("agent not connected")
	}
	writer := (victim + 1) % 3
	last := ""
	for i := 1; i <= 20; i++ {
		last = "v" + string(rune('a'+i))
		c.put(writer, "app/db", last)
		if i == 10 {
			c.servers[victim].proc.Kill()
		}
	}
	start := time.Now()
	waitValue(t, a, "c1", "db", last, 2*time.Second)
	t.Logf("server %d killed; agent on server %d, converged %v after the last rotation", victim, c.serverOf(a), time.Since(start).Round(time.Millisecond))
	if c.serverOf(a) == victim {
		t.Fatal("agent still on the killed server")
	}
	// While the killed server is down its records are missing; the server
	// the agent failed over to records what the container holds again
	// (delivery.apply: it had not seen the container), so the chain of
	// custody has it, and the last version.
	now := c.serverOf(a)
	waitFor(t, 5*time.Second, "the new server's delivery records", func() bool {
		// Exit 1: the killed server's records are missing, and said so.
		out, errOut, code := c.cli(now, "audit", "ls", "--secret", "app/db", "--action", "delivery.*", "-o", "json")
		var evs []audit.Event
		if code != 1 || !strings.Contains(errOut, "records missing: server") || json.Unmarshal([]byte(out), &evs) != nil {
			return false
		}
		reapplied, last := false, false
		for _, e := range evs {
			if e.Details["container_id"] != "c1" || e.Result != audit.ResultOK || e.Actor != "agent:node-1" {
				continue
			}
			reapplied = reapplied || e.Action == "delivery.apply" && e.Details["version"] != "1"
			last = last || e.Details["version"] == "21"
		}
		return reapplied && last
	})

	// Restarted, the killed server appends the records it had queued and
	// not appended (its spool): the trails are whole again, and every
	// version the container ever held has its delivery.send, whichever
	// server sent it.
	c.start(victim)
	var evs []audit.Event
	waitFor(t, 10*time.Second, "every server's records", func() bool {
		out, _, code := c.cli(now, "audit", "ls", "--secret", "app/db", "--action", "delivery.send", "-o", "json")
		evs = nil
		return code == 0 && json.Unmarshal([]byte(out), &evs) == nil
	})
	sent := map[string]bool{}
	for _, e := range evs {
		sent[e.Details["container_id"]+"/app/db@"+e.Details["version"]] = true
	}
	for _, h := range a.everHeld() {
		if !sent[h] {
			t.Errorf("%s was held, but no server recorded sending it (%d delivery.send records)", h, len(evs))
		}
	}
	if _, errOut, code := c.cli(victim, "audit", "verify"); code != 0 {
		t.Fatalf("audit verify after the restart: exit %d: %s", code, errOut)
	}
}

// A server restarted with an empty data dir rejoins from etcd alone: it
// serves the installation's secrets and tokens, and agents on it get
// their values.
func TestServerRejoinsWithAnEmptyDataDir(t *testing.T) {
	c := newCluster(t, 2)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	c.servers[1].proc.Stop()
	if err := os.RemoveAll(c.servers[1].dataDir); err != nil {
		t.Fatal(err)
	}
	c.start(1)
	a := c.startAgent("node-1", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)
	c.put(0, "app/db", "v2")
	waitValue(t, a, "c1", "db", "v2", 2*time.Second)
	ca, err := os.ReadFile(c.servers[1].dataDir + "/ca.pem")
	if err != nil || string(ca) != string(c.caPEM) {
		t.Fatalf("ca.pem of the rejoined server: %v", err)
	}
}

// One etcd member down: writes go on. Two down (no quorum): the servers
// answer 503 with a clear message, /readyz says why, connected agents keep
// their values; when quorum returns, writes and deliveries resume.
func TestEtcdQuorumLoss(t *testing.T) {
	c := newCluster(t, 2)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-b", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)

	m := c.etcd.Members
	if err := m[0].Kill(); err != nil {
		t.Fatal(err)
	}
	c.put(0, "app/db", "v2")
	waitValue(t, a, "c1", "db", "v2", 5*time.Second)

	if err := m[1].Kill(); err != nil {
		t.Fatal(err)
	}
	// The servers notice within a ping or two (a request that came in
	// before that waits for etcd).
	for _, i := range []int{0, 1} {
		waitFor(t, 10*time.Second, "/readyz to say 503", func() bool { code, _ := c.readyz(i); return code == http.StatusServiceUnavailable })
	}
	code, body := c.api(0, "PUT", "/v1/secrets/app/db", map[string]string{"value": "djM="})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "store is unavailable") {
		t.Fatalf("a write without quorum: %d %s", code, body)
	}
	time.Sleep(2 * time.Second)
	if got := string(a.d.Files("c1")["db"].Value); got != "v2" {
		t.Fatalf("container value without quorum: %q", got)
	}
	if !a.Stats().Connected {
		t.Fatal("the agent lost its stream when etcd lost quorum")
	}

	for _, i := range []int{0, 1} {
		if err := m[i].Restart(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.etcd.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 10*time.Second, "writes to be accepted again", func() bool {
		code, _ := c.api(0, "PUT", "/v1/secrets/app/db", map[string]string{"value": "djQ="}) // v4
		return code == http.StatusOK || code == http.StatusCreated
	})
	waitValue(t, a, "c1", "db", "v4", 2*time.Second)
	t.Logf("write accepted and delivered %v after quorum returned", time.Since(back).Round(time.Millisecond))
	if code, b := c.readyz(1); code != http.StatusOK {
		t.Fatalf("/readyz after quorum returned: %d %s", code, b)
	}
}

func (c *cluster) readyz(i int) (int, string) {
	code, b := c.api(i, "GET", "/readyz", nil)
	return code, string(b)
}

// Without quorum, an agent whose server is killed fails over to a server
// that has not cached its values and cannot read them from etcd: its
// containers keep their files (before, that server sent a state without
// the files it could not read, and the agent removed them), and get their
// state once quorum is back.
func TestFailoverWithoutQuorumKeepsFiles(t *testing.T) {
	// Reads fail after etcd.request_timeout: 2 s instead of 10.
	conf := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(conf, []byte("etcd:\n  request_timeout: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 2, "--config", conf)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	a := c.startAgent("node-1", 0, c.addrs())
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)
	on := c.serverOf(a)
	other := 1 - on

	m := c.etcd.Members
	for _, i := range []int{0, 1} {
		if err := m[i].Kill(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "/readyz to say 503", func() bool { code, _ := c.readyz(other); return code == http.StatusServiceUnavailable })
	c.servers[on].proc.Kill()
	waitFor(t, 10*time.Second, "the agent to fail over", func() bool { return c.serverOf(a) == other })
	time.Sleep(4 * time.Second) // the server's reads of the values have failed by now
	if f, ok := a.d.Files("c1")["db"]; !ok || string(f.Value) != "v1" {
		t.Fatalf("after a failover without quorum the container holds %q (present %v), want v1", f.Value, ok)
	}

	for _, i := range []int{0, 1} {
		if err := m[i].Restart(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.etcd.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "writes to be accepted again", func() bool {
		code, _ := c.api(other, "PUT", "/v1/secrets/app/db", map[string]string{"value": "djI="}) // v2
		return code == http.StatusOK || code == http.StatusCreated
	})
	waitValue(t, a, "c1", "db", "v2", 2*time.Second)
}
