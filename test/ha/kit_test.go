// Package ha tests several coffer-servers on one etcd cluster, with real
// processes: a 3-member etcd (internal/etcdtest), 3 coffer-server
// processes on 127.0.0.1 and in-process agents (internal/agent) with a
// simulated runtime and the in-memory deliverer.
package ha

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/etcdtest"
	"coffer/internal/seal"
	"coffer/internal/secret"
	"coffer/test/testkit"
)

// cluster is 3 etcd members and the coffer-servers on them.
type cluster struct {
	t       *testing.T
	etcd    *etcdtest.Cluster
	key     string // the master key file all servers share
	servers []*server
	token   string // the bootstrap admin token (from the first server)
	caPEM   []byte
	extra   []string // more coffer-server arguments
}

// server is one coffer-server process.
type server struct {
	proc    *testkit.Proc
	addr    string
	dataDir string
	etcd    []string // its etcd endpoints when not all members' (a proxy)
}

func newCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	return newClusterKey(t, n, true, extra...)
}

// newClusterKey is newCluster; with keyFile false the servers get no
// --master-key-file (their master key access is in extra: a KMS seal).
func newClusterKey(t *testing.T, n int, keyFile bool, extra ...string) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and coffer-server processes")
	}
	c := &cluster{t: t, etcd: etcdtest.Start(t, etcdtest.Options{Members: 3}), extra: extra}
	if keyFile {
		c.key = filepath.Join(t.TempDir(), "master.key")
		if _, err := seal.CreateKeyFile(c.key); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		s := &server{addr: testkit.FreeAddr(t), dataDir: filepath.Join(t.TempDir(), fmt.Sprintf("server-%d", i))}
		c.servers = append(c.servers, s)
		c.start(i)
		if i == 0 {
			c.loadBootstrap(0)
		}
	}
	return c
}

// loadBootstrap reads the admin token and CA of server i, the first.
func (c *cluster) loadBootstrap(i int) {
	c.t.Helper()
	tok, err := os.ReadFile(filepath.Join(c.servers[i].dataDir, "admin.token"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.token = strings.TrimSpace(string(tok))
	if c.caPEM, err = os.ReadFile(filepath.Join(c.servers[i].dataDir, "ca.pem")); err != nil {
		c.t.Fatal(err)
	}
}

// start (re)starts server i on its address and data dir and waits until it
// listens.
func (c *cluster) start(i int) {
	c.t.Helper()
	if err := c.restart(i); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) addrs() string {
	var a []string
	for _, s := range c.servers {
		a = append(a, s.addr)
	}
	return strings.Join(a, ",")
}

// api calls server i's REST API as the admin; it returns the status and
// body.
func (c *cluster) api(i int, method, path string, body any) (int, []byte) {
	c.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+c.servers[i].addr+path, r)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (c *cluster) must(i int, method, path string, body, out any) {
	c.t.Helper()
	code, data := c.api(i, method, path, body)
	if code < 200 || code >= 300 {
		c.t.Fatalf("server %d: %s %s: %d %s", i, method, path, code, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) put(i int, name, value string) {
	c.t.Helper()
	c.must(i, "PUT", "/v1/secrets/"+name, map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value))}, nil)
}

func (c *cluster) bind(i int, name, secretName, selector string) {
	c.t.Helper()
	c.must(i, "PUT", "/v1/bindings/"+name, map[string]string{"secret": secretName, "selector": selector}, nil)
}

// simAgent is an in-process coffer-agent with a simulated runtime.
type simAgent struct {
	*agent.Agent
	name string
	rt   *fake.Runtime
	d    *memory.Deliverer

	mu   sync.Mutex
	held map[string]bool // "container/secret@version" of every file ever applied
}

// everHeld lists every "container/secret@version" the agent applied.
func (a *simAgent) everHeld() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.held))
}

// startAgent enrolls an agent through server enrollVia and runs it
// against servers (host:port, comma-separated).
func (c *cluster) startAgent(name string, enrollVia int, servers string) *simAgent {
	c.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	c.must(enrollVia, "POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
	stateDir := filepath.Join(c.t.TempDir(), name)
	ctx, cancel := context.WithCancel(context.Background())
	cert, err := agent.LoadOrEnroll(ctx, c.servers[enrollVia].addr, c.caPEM, stateDir, name, tok.Token)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	a := &simAgent{name: name, rt: fake.New(), held: map[string]bool{}}
	a.d = memory.New(memory.Config{OnApply: func(id string, files []secret.File) {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, f := range files {
			a.held[fmt.Sprintf("%s/%s@%d", id, f.Secret, f.Version)] = true
			f.Value.Zero()
		}
	}})
	a.Agent = agent.New(agent.Config{Server: servers, CAPEM: c.caPEM, Cert: cert, StateDir: stateDir, Runtime: a.rt, Deliverer: a.d})
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	c.t.Cleanup(func() { cancel(); <-done })
	return a
}

func (a *simAgent) startContainer(id string, labels map[string]string) {
	a.rt.Start(container.Info{ID: id, Name: id, Labels: labels, PID: 1})
}

// waitValue waits up to within for container id's file to hold want
// ("" : to be absent).
func waitValue(t *testing.T, a *simAgent, id, file, want string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	err := a.d.WaitFiles(ctx, id, func(files map[string]secret.File) bool {
		f, ok := files[file]
		if want == "" {
			return !ok
		}
		return ok && string(f.Value) == want
	})
	if err != nil {
		got := "absent"
		if f, ok := a.d.Files(id)[file]; ok {
			got = fmt.Sprintf("another value (version %d)", f.Version)
		}
		t.Fatalf("%s: container %s file %s: want %q within %v, have %s; agent %+v", a.name, id, file, want, within, got, a.Stats())
	}
}

// serverOf returns the index of the server the agent is connected to, -1
// if none.
func (c *cluster) serverOf(a *simAgent) int {
	st := a.Stats()
	if !st.Connected {
		return -1
	}
	for i, s := range c.servers {
		if s.addr == st.Server {
			return i
		}
	}
	return -1
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
