package ha

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"coffer/internal/container"
)

type holderJSON struct {
	Agent       string `json:"agent"`
	ContainerID string `json:"container_id"`
	Version     uint64 `json:"version"`
	Pending     bool   `json:"pending"`
}

type agentJSON struct {
	Name       string `json:"name"`
	Connected  bool   `json:"connected"`
	Containers int    `json:"containers"`
	Server     string `json:"server"`
}

func (c *cluster) holders(i int, name string) (uint64, map[string]holderJSON) {
	c.t.Helper()
	var v struct {
		Current uint64       `json:"current_version"`
		Holders []holderJSON `json:"holders"`
	}
	c.must(i, "GET", "/v1/secrets/"+name, nil, &v)
	out := map[string]holderJSON{}
	for _, h := range v.Holders {
		if _, dup := out[h.ContainerID]; dup {
			c.t.Fatalf("server %d lists container %s twice: %+v", i, h.ContainerID, v.Holders)
		}
		out[h.ContainerID] = h
	}
	return v.Current, out
}

func (c *cluster) agents(i int) map[string]agentJSON {
	c.t.Helper()
	var as []agentJSON
	c.must(i, "GET", "/v1/agents", nil, &as)
	out := map[string]agentJSON{}
	for _, a := range as {
		out[a.Name] = a
	}
	return out
}

// Rollout status and agent ls answer for the whole installation from any
// server: the agents connected to B and C, their containers and the
// versions those hold show up when A is asked (before, A listed only its
// own agents: none). A server killed takes its agents out of every other
// server's answers within its lease (an agent that cannot fail over shows
// as disconnected, its container no longer as a holder); an agent that
// fails over shows up at its new server. No value reaches etcd in the
// published records.
func TestRolloutAndAgentsAcrossServers(t *testing.T) {
	c := newCluster(t, 3)
	c.put(0, "app/db", "s3cr3t-presence-v1")
	c.bind(0, "web-db", "app/db", "app=web")
	onB := c.startAgent("node-b", 1, c.servers[1].addr) // B only: it cannot fail over
	onB.startContainer("cb", map[string]string{"app": "web"})
	onC := c.startAgent("node-c", 2, c.servers[2].addr)
	onC.startContainer("cc", map[string]string{"app": "web"})
	mover := c.startAgent("node-m", 2, c.servers[1].addr+","+c.servers[2].addr) // B or C
	mover.startContainer("cm", map[string]string{"app": "web"})
	for _, a := range []*simAgent{onB, onC, mover} {
		waitValue(t, a, "c"+a.name[len("node-"):], "db", "s3cr3t-presence-v1", 10*time.Second)
	}
	// A hostile agent on C reports containers with huge names: its record
	// would not fit in an etcd request; it must not keep C's other agents
	// out of the answers.
	big := c.startAgent("node-big", 2, c.servers[2].addr)
	big.rt.Start(container.Info{ID: "big1", Name: strings.Repeat("x", 800<<10), PID: 1})
	big.rt.Start(container.Info{ID: "big2", Name: strings.Repeat("y", 800<<10), PID: 1})

	// Asked of A, which no agent is connected to.
	holdsAll := func(want uint64, ids ...string) func() bool {
		return func() bool {
			cur, hs := c.holders(0, "app/db")
			if cur != want || len(hs) != len(ids) {
				return false
			}
			for _, id := range ids {
				if h, ok := hs[id]; !ok || h.Version != want || h.Pending {
					return false
				}
			}
			return true
		}
	}
	took := waitFor(t, 5*time.Second, "A to list the containers on B and C as holding version 1", holdsAll(1, "cb", "cc", "cm"))
	t.Logf("A lists B's and C's holders %v after they hold the value", took.Round(time.Millisecond))
	as := c.agents(0)
	for name, srv := range map[string]int{"node-b": 1, "node-c": 2, "node-m": c.serverOf(mover)} {
		if a := as[name]; !a.Connected || a.Server != c.servers[srv].addr || a.Containers != 1 {
			t.Fatalf("agent ls through A: %s = %+v, want connected to %s with 1 container", name, a, c.servers[srv].addr)
		}
	}
	if out, errOut, code := c.cli(0, "agent", "ls"); code != 0 || !strings.Contains(out, "connected to "+c.servers[1].addr) {
		t.Fatalf("coffer agent ls through A: exit %d:\n%s%s", code, out, errOut)
	}
	waitFor(t, 5*time.Second, "A to list node-big on C with its 2 containers", func() bool {
		a := c.agents(0)["node-big"]
		return a.Connected && a.Server == c.servers[2].addr && a.Containers == 2
	})

	// A rotation through A: coffer rollout status asked of A waits for
	// the containers on B and C.
	c.put(0, "app/db", "s3cr3t-presence-v2")
	out, errOut, code := c.cli(0, "rollout", "status", "app/db", "--timeout", "10s", "--interval", "100ms")
	if code != 0 || !strings.Contains(out, "3 of 3 containers hold it") {
		t.Fatalf("coffer rollout status through A: exit %d: %s %s", code, out, errOut)
	}

	// Nothing but names and versions in the published records.
	dump := string(c.etcd.Etcdctl(t, "get", "--prefix", "ha/live/"))
	if !strings.Contains(dump, "node-b") {
		t.Fatalf("no published record of node-b in etcd:\n%s", dump)
	}
	if strings.Contains(dump, "s3cr3t-presence") {
		t.Fatal("a secret value is in the published records")
	}
	// Nothing changes, nothing is written.
	revs := func() string {
		var r struct {
			Kvs []struct {
				Key         string `json:"key"`
				ModRevision int64  `json:"mod_revision"`
			} `json:"kvs"`
		}
		if err := jsonUnmarshal(c.etcd.Etcdctl(t, "get", "--prefix", "ha/live/", "-w", "json"), &r); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(r.Kvs)
	}
	before := revs()
	time.Sleep(time.Second)
	if after := revs(); after != before {
		t.Fatalf("the records were written again with nothing changed:\n%s\n%s", before, after)
	}

	// B killed: node-b is connected nowhere, node-m is on C.
	c.servers[1].proc.Kill()
	killed := time.Now()
	took = waitFor(t, 10*time.Second, "A to show node-b disconnected and its container gone from the holders", func() bool {
		if c.agents(0)["node-b"].Connected {
			return false
		}
		_, hs := c.holders(0, "app/db")
		_, still := hs["cb"]
		return !still
	})
	t.Logf("node-b disconnected in A's answers %v after B was killed (lease %ds)", took.Round(time.Millisecond), 3)
	waitFor(t, 10*time.Second, "node-m on C", func() bool { return c.serverOf(mover) == 2 })
	waitFor(t, 5*time.Second, "A to show node-m on C and the holders on C", func() bool {
		a := c.agents(0)["node-m"]
		return a.Connected && a.Server == c.servers[2].addr && holdsAll(2, "cc", "cm")()
	})
	t.Logf("settled %v after the kill", time.Since(killed).Round(time.Millisecond))

	// Removed through A: gone from A's and C's answers.
	c.must(0, "DELETE", "/v1/agents/node-c", nil, nil)
	for _, i := range []int{0, 2} {
		waitFor(t, 5*time.Second, "the removed agent's holders to go", func() bool {
			_, hs := c.holders(i, "app/db")
			_, still := hs["cc"]
			return !still
		})
	}
}

// An agent that leaves a server that stays up (its connection to A is cut,
// it fails over to B): A still remembers its container, as it does for an
// offline agent, but answers from B's record: the container shows once,
// on the version it holds now, not pending (before, A counted it as
// pending on the version it held when it left).
func TestRolloutOfAnAgentThatMovedAway(t *testing.T) {
	c := newCluster(t, 2)
	c.put(0, "app/db", "v1")
	c.bind(0, "web-db", "app/db", "app=web")
	toA := newProxy(t, c.servers[0].addr)
	toB := newProxy(t, c.servers[1].addr)
	toB.setCut(true) // so that it starts on A
	a := c.startAgent("node-1", 0, toA.ln.Addr().String()+","+toB.ln.Addr().String())
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)
	waitFor(t, 5*time.Second, "the agent on A", func() bool { return a.Stats().Server == toA.ln.Addr().String() })
	toB.setCut(false)
	toA.setCut(true)
	t0 := time.Now()
	waitFor(t, 10*time.Second, "the agent to fail over to B", func() bool { return a.Stats().Connected && a.Stats().Server == toB.ln.Addr().String() })
	t.Logf("failed over to B in %v", time.Since(t0).Round(time.Millisecond))
	c.put(0, "app/db", "v2")
	waitValue(t, a, "c1", "db", "v2", 2*time.Second)
	waitFor(t, 5*time.Second, "A's rollout to show c1 on version 2, not pending", func() bool {
		_, hs := c.holders(0, "app/db")
		h, ok := hs["c1"]
		return ok && len(hs) == 1 && h.Version == 2 && !h.Pending
	})
	if ag := c.agents(0)["node-1"]; !ag.Connected || ag.Server != c.servers[1].addr {
		t.Fatalf("agent ls through A: %+v, want connected to B", ag)
	}
}
