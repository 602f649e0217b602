package ha

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/test/testkit"
)

// The real coffer-agent process on the real Docker engine, on servers
// sharing etcd: a container's file rotates through A while its agent is
// connected to B or C (found through A's agent ls); the agent's server is
// killed with SIGKILL in the middle of a run of rotations; the agent fails
// over and the container's tmpfs ends with the last version.
func TestDockerAgentFailsOverMidRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("real Docker agent on etcd")
	}
	d := dockertest.Require(t)
	d.Image(t)
	c := newCluster(t, 3)
	c.put(0, "app/db", "v0")
	c.bind(0, "web-db", "app/db", "app=web")

	b := make([]byte, 4)
	rand.Read(b)
	label := "ha-" + hex.EncodeToString(b)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, c.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	c.must(0, "POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
	agent := testkit.Start(t, testkit.Bin(t, "coffer-agent"), "--server", c.servers[1].addr+","+c.servers[2].addr,
		"--ca-cert", caFile, "--state-dir", filepath.Join(dir, "agent"), "--name", "docker-node", "--join-token", tok.Token,
		"--log-level", "info", "--only-labels", "coffer.test="+label)
	ctr := d.Run(t, dockertest.RunOpts{Labels: map[string]string{"coffer.test": label, "app": "web"}})

	read := func() string {
		out, err := d.Exec(t, ctr.ID, "cat", "/run/secrets/db")
		if err != nil {
			return ""
		}
		return out
	}
	wait := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for read() != want {
			if time.Since(start) > within {
				t.Fatalf("container's /run/secrets/db: want %q within %v, have %q\nagent log:\n%s", want, within, read(), agent.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	wait("v0", 30*time.Second)

	// Where the agent is, asked of A.
	victim := -1
	waitFor(t, 10*time.Second, "A to list the agent as connected to B or C", func() bool {
		a := c.agents(0)["docker-node"]
		for i, s := range c.servers {
			if a.Connected && a.Server == s.addr {
				victim = i
			}
		}
		return victim > 0
	})
	var last string
	for i := 1; i <= 20; i++ {
		last = fmt.Sprintf("v%d", i)
		c.put(0, "app/db", last)
		if i == 10 {
			c.servers[victim].proc.Kill()
		}
	}
	took := wait(last, 15*time.Second)
	t.Logf("server %d killed mid-rotation; the container held the last version %v after it was written", victim, took.Round(time.Millisecond))
	survivor := 3 - victim
	waitFor(t, 10*time.Second, "A to list the agent on the surviving server", func() bool {
		a := c.agents(0)["docker-node"]
		return a.Connected && a.Server == c.servers[survivor].addr
	})
	// And it goes on: a rotation through A reaches it there.
	c.put(0, "app/db", "after")
	wait("after", 5*time.Second)
}
