package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
)

// proxy forwards a loopback port to a server: the same server at a second
// address, that a test can take away (close) as if that server died.
type proxy struct {
	l     net.Listener
	to    string
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, to string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, to: to}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Addr() string { return p.l.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, s); c.Close() }()
	}
}

// Close stops listening (new connects are refused) and cuts every
// connection through it.
func (p *proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// An agent given several addresses, some dead, connects through the live
// one whichever it starts at, and soon (the dead ones refuse at once).
func TestAgentSkipsDeadServers(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	for i := range 4 {
		name := "node-" + string(rune('a'+i))
		list := strings.Join([]string{deadAddr(t), r.srv.Addr(), deadAddr(t)}, ",")
		a, rt, d, stop := r.startAgentWith(name, agent.Config{Server: list})
		rt.Start(container.Info{ID: name + "-c", Name: name, Labels: map[string]string{"app": "web"}, PID: 1})
		waitValueWithin(t, d, name+"-c", "db", "v1", 3*time.Second)
		if s := a.Stats(); s.Server != r.srv.Addr() {
			t.Fatalf("connected through %q, want %q", s.Server, r.srv.Addr())
		}
		stop()
	}
}

// A DNS name with several addresses: the agent tries each (here the
// name's first addresses have no server) and checks the server's
// certificate for the name, not the address.
func TestAgentTriesEveryAddressOfAName(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	_, port, _ := net.SplitHostPort(r.srv.Addr())
	// The server listens on 127.0.0.1 only: 127.0.0.2 and .3 refuse.
	res := resolver{"localhost": {"127.0.0.2", "127.0.0.3", "127.0.0.1"}}
	a, rt, d, _ := r.startAgentWith("node-1", agent.Config{Server: "localhost:" + port, Resolver: res})
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 1})
	waitValueWithin(t, d, "c1", "db", "v1", 5*time.Second)
	if s := a.Stats(); s.Server != r.srv.Addr() {
		t.Fatalf("connected through %q", s.Server)
	}
	// A name the server's certificate does not hold is refused, whatever
	// address it resolves to.
	res2 := resolver{"coffer.invalid": {"127.0.0.1"}}
	a2, _, _, _ := r.startAgentWith("node-2", agent.Config{Server: "coffer.invalid:" + port, Resolver: res2})
	time.Sleep(time.Second)
	if s := a2.Stats(); s.Connected {
		t.Fatalf("agent connected to a server whose certificate does not name %q", "coffer.invalid")
	}
}

type resolver map[string][]string

func (r resolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if ips, ok := r[host]; ok {
		return slices.Clone(ips), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestAgentFailsOver takes away the address an agent is connected
// through: the agent moves to the other address and the server there
// resyncs its full state — containers started and stopped while it was
// away, and a rotation made meanwhile.
func TestAgentFailsOver(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	p1, p2 := newProxy(t, r.srv.Addr()), newProxy(t, r.srv.Addr())
	proxies := map[string]*proxy{p1.Addr(): p1, p2.Addr(): p2}
	a, rt, d, _ := r.startAgentWith("node-1", agent.Config{Server: p1.Addr() + "," + p2.Addr()})
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 1})
	rt.Start(container.Info{ID: "c2", Name: "web-2", Labels: map[string]string{"app": "web"}, PID: 2})
	waitValue(t, d, "c1", "db", "v1")
	waitValue(t, d, "c2", "db", "v1")
	first := a.Stats().Server
	p := proxies[first]
	if p == nil {
		t.Fatalf("connected through %q, not a proxy", first)
	}
	// The agent's server goes away. While the agent is between servers,
	// a container starts and one stops (their events find no stream), and
	// the secret rotates.
	p.Close()
	waitStats(t, a, func(s agent.Stats) bool { return !s.Connected || s.Server != first })
	rt.Start(container.Info{ID: "c3", Name: "web-3", Labels: map[string]string{"app": "web"}, PID: 3})
	rt.Stop("c2")
	r.put("app/db", "v2")
	deadline := time.Now().Add(3 * time.Second)
	waitValueWithin(t, d, "c1", "db", "v2", time.Until(deadline))
	waitValueWithin(t, d, "c3", "db", "v2", time.Until(deadline))
	if s := a.Stats(); !s.Connected || s.Server == first || proxies[s.Server] == nil {
		t.Fatalf("after failover: %+v (first %s)", s, first)
	}
	// The server knows c3 runs and c2 does not: it holds the rotation
	// state of exactly c1 and c3.
	var show struct {
		Holders []struct {
			ContainerID string `json:"container_id"`
			Version     uint64 `json:"version"`
		} `json:"holders"`
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		r.call("GET", "/v1/secrets/app/db", nil, &show)
		var ids []string
		for _, h := range show.Holders {
			if h.Version == 2 {
				ids = append(ids, h.ContainerID)
			}
		}
		slices.Sort(ids)
		if slices.Equal(ids, []string{"c1", "c3"}) && len(show.Holders) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holders after failover = %+v", show.Holders)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Enrollment takes the same list: it skips servers it cannot reach and
// enrolls with the one it can, whichever it starts at; a bad list is a
// clear error before anything is sent.
func TestEnrollWithSeveralServers(t *testing.T) {
	r := newRig(t)
	for i := range 4 {
		var tok struct {
			Token string `json:"token"`
		}
		r.call("POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
		list := deadAddr(t) + "," + r.srv.Addr() + "," + deadAddr(t)
		name := "node-" + string(rune('a'+i))
		if _, err := agent.LoadOrEnroll(context.Background(), list, r.caPEM, filepath.Join(r.dir, name), name, tok.Token); err != nil {
			t.Fatalf("enroll through %s: %v", list, err)
		}
	}
	var tok struct {
		Token string `json:"token"`
	}
	r.call("POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
	if _, err := agent.LoadOrEnroll(context.Background(), deadAddr(t)+","+deadAddr(t), r.caPEM, filepath.Join(r.dir, "x"), "x", tok.Token); err == nil || !strings.Contains(err.Error(), "no server reachable") {
		t.Fatalf("enroll with no server up: %v", err)
	}
	if _, err := agent.LoadOrEnroll(context.Background(), r.srv.Addr()+",", r.caPEM, filepath.Join(r.dir, "y"), "y", tok.Token); !errors.Is(err, agent.ErrServers) {
		t.Fatalf("enroll with a bad list: %v", err)
	}
	// The token was not spent by either failure.
	if _, err := agent.LoadOrEnroll(context.Background(), r.srv.Addr(), r.caPEM, filepath.Join(r.dir, "z"), "z", tok.Token); err != nil {
		t.Fatal(err)
	}
}
