package ha

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/test/testkit"
)

// proxy forwards TCP connections to target until cut: then it closes the
// connections it carries and refuses new ones, until restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) setCut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for c := range p.conns {
			c.Close()
		}
	}
}

// revision is etcd's current revision.
func (c *cluster) revision() int64 {
	c.t.Helper()
	var r struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal(c.etcd.Etcdctl(c.t, "get", "ha/none", "-w", "json"), &r); err != nil {
		c.t.Fatal(err)
	}
	return r.Header.Revision
}

// Server B is cut off from etcd while changes are made through A, and etcd
// compacts its history past what B's watch had seen: when B is back its
// watch cannot resume (ErrCompacted), and it reloads everything instead.
// Nothing is lost: its agent's container gets the last version, loses the
// file of a binding deleted meanwhile and gets the file of one created
// meanwhile, and a token revoked meanwhile is refused on B.
func TestWatchCompactedWhileAway(t *testing.T) {
	c := newCluster(t, 0)
	// A on all members, B on one member through a proxy it can be cut off by.
	c.servers = []*server{{addr: testkit.FreeAddr(t), dataDir: t.TempDir() + "/a"}, {addr: testkit.FreeAddr(t), dataDir: t.TempDir() + "/b"}}
	c.start(0)
	c.loadBootstrap(0)
	px := newProxy(t, strings.TrimPrefix(c.etcd.Endpoints()[0], "http://"))
	c.servers[1].etcd = []string{"http://" + px.ln.Addr().String()}
	c.start(1)

	c.put(0, "app/db", "v1")
	c.put(0, "app/old", "o1")
	c.put(0, "app/new", "n1")
	c.bind(0, "web-db", "app/db", "app=web")
	c.bind(0, "web-old", "app/old", "app=web")
	var tok struct {
		Token string `json:"token"`
		ID    string `json:"id"`
	}
	c.must(0, "POST", "/v1/tokens", map[string]string{"role": "viewer"}, &tok)
	a := c.startAgent("node-b", 1, c.servers[1].addr)
	a.startContainer("c1", map[string]string{"app": "web"})
	waitValue(t, a, "c1", "db", "v1", 10*time.Second)
	waitValue(t, a, "c1", "old", "o1", 2*time.Second)
	admin := c.token
	c.token = tok.Token
	waitFor(t, 2*time.Second, "the viewer token to work on B", func() bool { code, _ := c.api(1, "GET", "/v1/secrets", nil); return code == http.StatusOK })
	c.token = admin

	px.setCut(true)
	waitFor(t, 10*time.Second, "B to notice it lost etcd", func() bool { code, _ := c.readyz(1); return code == http.StatusServiceUnavailable })
	for i := 2; i <= 5; i++ {
		c.put(0, "app/db", "v"+strconv.Itoa(i))
	}
	c.must(0, "DELETE", "/v1/bindings/web-old", nil, nil)
	c.bind(0, "web-new", "app/new", "app=web")
	c.must(0, "DELETE", "/v1/tokens/"+tok.ID, nil, nil)
	rev := c.revision()
	c.etcd.Etcdctl(t, "compact", strconv.FormatInt(rev, 10))
	if got := string(a.d.Files("c1")["db"].Value); got != "v1" {
		t.Fatalf("B delivered %q while cut off from etcd", got)
	}

	px.setCut(false)
	back := time.Now()
	waitValue(t, a, "c1", "db", "v5", 30*time.Second)
	waitValue(t, a, "c1", "new", "n1", 5*time.Second)
	waitValue(t, a, "c1", "old", "", 5*time.Second)
	c.token = tok.Token
	waitFor(t, 5*time.Second, "the token revoked while B was away to be refused on B", func() bool {
		code, _ := c.api(1, "GET", "/v1/secrets", nil)
		return code == http.StatusUnauthorized
	})
	c.token = admin
	t.Logf("B caught up %v after etcd was reachable again (compacted at revision %d)", time.Since(back).Round(time.Millisecond), rev)
	if !strings.Contains(c.servers[1].proc.Logs(), "compacted") {
		t.Fatalf("B's watch did not see the compaction (it resumed instead of reloading):\n%s", c.servers[1].proc.Logs())
	}
	// And it keeps following: a change after the reload arrives.
	c.put(0, "app/db", "v6")
	waitValue(t, a, "c1", "db", "v6", 2*time.Second)
}
