package ha

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/internal/catalog"
	"coffer/test/testkit"
)

// soakRotations is the soak's size: COFFER_HA_ROTATIONS, default 1,000.
func soakRotations(t *testing.T) int {
	n := 1000
	if s := os.Getenv("COFFER_HA_ROTATIONS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 10 {
			t.Fatalf("COFFER_HA_ROTATIONS=%q: want a number of rotations, at least 10", s)
		}
		n = v
	}
	return n
}

// Rotations spread over the three servers by concurrent writers while
// servers are killed (SIGKILL) at random moments, in the middle of
// requests too, and restarted, in a bounded loop: no two writes are given
// the same version; at the end every container holds the secret's
// current version (its value, and the version number in every server's
// rollout), and every audit chain verifies.
func TestRotationsWhileServersAreKilled(t *testing.T) {
	const writers = 4
	rotations := soakRotations(t)
	c := newCluster(t, 3)
	c.put(0, "app/db", "v0")
	c.bind(0, "web-db", "app/db", "app=web")
	var agents []*simAgent
	for i := range 3 {
		a := c.startAgent(fmt.Sprintf("node-%d", i), i, c.addrs())
		for j := range 3 {
			a.startContainer(fmt.Sprintf("c%d-%d", i, j), map[string]string{"app": "web"})
		}
		agents = append(agents, a)
	}
	ctrs := func(a *simAgent) []string {
		var ids []string
		for j := range 3 {
			ids = append(ids, fmt.Sprintf("c%s-%d", a.name[len("node-"):], j))
		}
		return ids
	}
	for _, a := range agents {
		for _, id := range ctrs(a) {
			waitValue(t, a, id, "db", "v0", 10*time.Second)
		}
	}

	// The servers' state, shared by the writers and the killer: down is
	// the server being killed or restarted (-1: none).
	var down atomic.Int32
	down.Store(-1)
	var (
		mu       sync.Mutex
		versions = map[uint64]string{} // version → the value written with it
		done     atomic.Int32          // rotations acknowledged
		unknown  atomic.Int32          // requests cut by a kill: applied or not
	)
	stop := make(chan struct{})
	var kills atomic.Int32
	killerDone := make(chan error, 1)
	go func() { // the killer: a bounded loop of kills and restarts
		rng := rand.New(rand.NewPCG(3, 4))
		var err error
		defer func() { killerDone <- err }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+rng.IntN(800)) * time.Millisecond):
			}
			i := rng.IntN(3)
			down.Store(int32(i))
			c.servers[i].proc.Kill()
			kills.Add(1)
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			if err = c.restart(i); err != nil {
				return
			}
			down.Store(-1)
		}
	}()
	var wg sync.WaitGroup
	per := rotations / writers
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for r := range per {
				value := fmt.Sprintf("w%d-r%d", w, r)
				for try := 0; ; try++ {
					i := rng.IntN(3)
					if int32(i) == down.Load() {
						continue
					}
					code, body := c.api(i, "PUT", "/v1/secrets/app/db", map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value))})
					if code == http.StatusOK || code == http.StatusCreated {
						var m catalog.SecretMeta
						if err := jsonUnmarshal(body, &m); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						old, dup := versions[m.Current]
						versions[m.Current] = value
						mu.Unlock()
						if dup {
							t.Errorf("version %d given to %s and %s", m.Current, old, value)
							return
						}
						done.Add(1)
						break
					}
					if code == 0 {
						unknown.Add(1) // cut by a kill (or refused): it may have been applied; write again
					}
					if try > 100 {
						t.Errorf("writer %d rotation %d: %d %s", w, r, code, body)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-killerDone; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// Every server up; one last rotation, so that the value to expect is
	// known even if the last version came from a request a kill cut.
	for i, s := range c.servers {
		if s.proc.Exited() {
			c.start(i)
		}
	}
	c.put(1, "app/db", "final")
	final := time.Now()
	away := 0 // agents between sessions when the last write is made
	for _, a := range agents {
		if !a.Stats().Connected {
			away++
		}
	}
	var meta catalog.SecretMeta
	c.must(0, "GET", "/v1/secrets/app/db", nil, &meta)
	// An agent whose sessions kept being cut within 10 s of starting may be
	// waiting out a reconnect backoff of up to 30 s (docs/ha.md, Backoff).
	for _, a := range agents {
		for _, id := range ctrs(a) {
			waitValue(t, a, id, "db", "final", 45*time.Second)
			if f := a.d.Files(id)["db"]; f.Version != meta.Current {
				t.Fatalf("container %s holds version %d, the current is %d", id, f.Version, meta.Current)
			}
		}
	}
	converged := time.Since(final)
	for i := range c.servers {
		waitFor(t, 5*time.Second, fmt.Sprintf("server %d's rollout to show every container on version %d", i, meta.Current), func() bool {
			_, hs := c.holders(i, "app/db")
			if len(hs) != 9 {
				return false
			}
			for _, h := range hs {
				if h.Version != meta.Current || h.Pending {
					return false
				}
			}
			return true
		})
	}
	rs, errOut, code := c.verify(1)
	if code != 0 {
		t.Fatalf("audit verify after the kills: exit %d %+v %s", code, rs, errOut)
	}
	t.Logf("%d rotations by %d writers (%d requests cut by a kill), %d kills; current version %d everywhere %v after the last write (%d of %d agents were between sessions then); %d chains verified",
		done.Load(), writers, unknown.Load(), kills.Load(), meta.Current, converged.Round(time.Millisecond), away, len(agents), len(rs))
}

// restart starts server i again, as start does, from a goroutine other
// than the test's (it returns an error instead of failing the test).
func (c *cluster) restart(i int) error {
	s := c.servers[i]
	eps := c.etcd.Endpoints()
	if s.etcd != nil {
		eps = s.etcd
	}
	args := append([]string{"--store", "etcd", "--etcd-endpoints", strings.Join(eps, ","), "--etcd-prefix", "ha",
		"--data-dir", s.dataDir, "--listen", s.addr, "--log-level", "warn"}, c.extra...)
	if c.key != "" {
		args = append(args, "--master-key-file", c.key)
	}
	s.proc = testkit.Start(c.t, testkit.Bin(c.t, "coffer-server"), args...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if conn, err := net.Dial("tcp", s.addr); err == nil {
			conn.Close()
			return nil
		}
		if s.proc.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("coffer-server %d did not start again:\n%s", i, s.proc.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
