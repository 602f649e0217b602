package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/identity"
	"coffer/internal/secret"
	"coffer/internal/server"
)

// rig is an in-process coffer-server on 127.0.0.1 and a REST client for it.
type rig struct {
	t      *testing.T
	srv    *server.Server
	dir    string
	caPEM  []byte
	admin  string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

func newRig(t *testing.T) *rig {
	t.Helper()
	return newRigWith(t, nil)
}

// newRigWith is newRig with adjust's changes to the server's configuration.
func newRigWith(t *testing.T, adjust func(*server.Config)) *rig {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(dir, "server")
	cfg.Listen = "127.0.0.1:0"
	if adjust != nil {
		adjust(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, srv: s, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	r.caPEM, _ = os.ReadFile(filepath.Join(cfg.DataDir, "ca.pem"))
	tok, _ := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	r.admin = strings.TrimSpace(string(tok))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.caPEM)
	r.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return r
}

func (r *rig) call(method, path string, body any, out any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+r.srv.Addr()+path, rd)
	req.Header.Set("Authorization", "Bearer "+r.admin)
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		r.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		json.Unmarshal(data, out)
	}
}

func (r *rig) put(name, value string) {
	r.call("PUT", "/v1/secrets/"+name, map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value))}, nil)
}

func (r *rig) bind(name, secretName, selector string) {
	r.call("PUT", "/v1/bindings/"+name, map[string]string{"secret": secretName, "selector": selector}, nil)
}

// startAgent enrolls and runs an agent with a fake runtime and an in-memory deliverer.
func (r *rig) startAgent(name string) (*agent.Agent, *fake.Runtime, *memory.Deliverer, context.CancelFunc) {
	return r.startAgentWith(name, agent.Config{})
}

// startAgentWith is startAgent with cfg's tunables (ValueGrace, backoffs,
// Server: default the rig's address).
func (r *rig) startAgentWith(name string, cfg agent.Config) (*agent.Agent, *fake.Runtime, *memory.Deliverer, context.CancelFunc) {
	r.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	r.call("POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
	ctx, cancel := context.WithCancel(context.Background())
	cert, err := agent.LoadOrEnroll(ctx, r.srv.Addr(), r.caPEM, filepath.Join(r.dir, name), name, tok.Token)
	if err != nil {
		r.t.Fatal(err)
	}
	rt := fake.New()
	d := memory.New(memory.Config{})
	if cfg.Server == "" {
		cfg.Server = r.srv.Addr()
	}
	cfg.CAPEM, cfg.Cert, cfg.StateDir, cfg.Runtime, cfg.Deliverer = r.caPEM, cert, filepath.Join(r.dir, name), rt, d
	a := agent.New(cfg)
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	r.t.Cleanup(stop)
	return a, rt, d, stop
}

func waitValue(t *testing.T, d *memory.Deliverer, id, file, want string) {
	t.Helper()
	waitValueWithin(t, d, id, file, want, 10*time.Second)
}

// waitValueWithin is waitValue with a bound on the wait.
func waitValueWithin(t *testing.T, d *memory.Deliverer, id, file, want string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	err := d.WaitFiles(ctx, id, func(files map[string]secret.File) bool {
		f, ok := files[file]
		if want == "" {
			return !ok
		}
		return ok && string(f.Value) == want
	})
	if err != nil {
		shown := fmt.Sprintf("%q", want)
		if len(want) > 64 {
			shown = fmt.Sprintf("a value of %d bytes", len(want))
		}
		t.Fatalf("container %s file %s: want %s: %v (have %d files)", id, file, shown, err, len(d.Files(id)))
	}
}

func TestAgentDeliversRotatesRevokes(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, rt, d, _ := r.startAgent("node-1")
	for i := range 5 {
		rt.Start(container.Info{ID: fmt.Sprintf("c%d", i), Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web"}, Image: "x:1", PID: 100 + i})
	}
	rt.Start(container.Info{ID: "other", Name: "other", Labels: map[string]string{"app": "db"}, PID: 99})
	for i := range 5 {
		waitValue(t, d, fmt.Sprintf("c%d", i), "db", "v1")
	}
	if len(d.Files("other")) != 0 {
		t.Fatal("unbound container got files")
	}
	r.put("app/db", "v2")
	for i := range 5 {
		waitValue(t, d, fmt.Sprintf("c%d", i), "db", "v2")
	}
	// Rollout state on the server.
	var show struct {
		Holders []struct {
			Version uint64 `json:"version"`
		} `json:"holders"`
		Pending int `json:"pending"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.call("GET", "/v1/secrets/app/db", nil, &show)
		if len(show.Holders) == 5 && show.Pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(show.Holders) != 5 || show.Pending != 0 || show.Holders[0].Version != 2 {
		t.Fatalf("rollout = %+v", show)
	}
	// Late binding reaches running containers; deleting it removes the file.
	r.put("app/api", "k1")
	r.bind("web-api", "app/api", "app in (web,db)")
	waitValue(t, d, "other", "api", "k1")
	waitValue(t, d, "c0", "api", "k1")
	r.call("DELETE", "/v1/bindings/web-api", nil, nil)
	waitValue(t, d, "other", "api", "")
	// Deleting the secret revokes it.
	r.call("DELETE", "/v1/secrets/app/db", nil, nil)
	for i := range 5 {
		waitValue(t, d, fmt.Sprintf("c%d", i), "db", "")
	}
	// Stopped containers are released and the agent forgets their values.
	for i := range 5 {
		rt.Stop(fmt.Sprintf("c%d", i))
	}
	rt.Stop("other")
	deadline = time.Now().Add(5 * time.Second)
	for !d.Released("c0") || a.Stats().Containers != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not released: %+v", a.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAgentSurvivesServerRestart(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	_, rt, d, _ := r.startAgent("node-1")
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 7})
	waitValue(t, d, "c1", "db", "v1")

	// Stop the server; the container keeps its value.
	addr := r.srv.Addr()
	r.cancel()
	<-r.done
	r.done <- nil // for the cleanup
	time.Sleep(300 * time.Millisecond)
	if got := string(d.Files("c1")["db"].Value); got != "v1" {
		t.Fatalf("value while the server is down: %q", got)
	}
	// Restart it on the same address and data dir; a rotation arrives.
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(r.dir, "server")
	cfg.Listen = addr
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.srv = s
	r.put("app/db", "v2")
	waitValue(t, d, "c1", "db", "v2")
}

// TestAgentZeroesValuesNoContainerWants checks the value reference counts:
// a rotated-away version leaves the agent's memory as soon as the last
// container holding it has the new one, and a stopped container's values as
// soon as it is released.
func TestAgentZeroesValuesNoContainerWants(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.put("app/api", "k1")
	r.bind("web-db", "app/db", "app=web")
	r.bind("api", "app/api", "tier=front")
	a, rt, d, _ := r.startAgentWith("node-1", agent.Config{ValueGrace: 50 * time.Millisecond})
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web", "tier": "front"}, PID: 7})
	rt.Start(container.Info{ID: "c2", Name: "web-2", Labels: map[string]string{"app": "web"}, PID: 8})
	waitValue(t, d, "c1", "api", "k1")
	waitValue(t, d, "c2", "db", "v1")
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 2 })
	r.put("app/db", "v2")
	waitValue(t, d, "c1", "db", "v2")
	waitValue(t, d, "c2", "db", "v2")
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 2 }) // db v2 and api k1; db v1 zeroed
	rt.Stop("c1")
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 1 && s.Containers == 1 })
	rt.Stop("c2")
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 0 && s.Containers == 0 })
}

func waitStats(t *testing.T, a *agent.Agent, cond func(agent.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(a.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("agent state: %+v", a.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProtocolFeatures speaks the wire protocol by hand, as an agent built
// before Batch existed (no features: Values, Desired, Applied) and as one
// that asks for it (Batch, AppliedBatch), against the same server.
func TestProtocolFeatures(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			name := fmt.Sprintf("raw-%v", batch)
			var tok struct {
				Token string `json:"token"`
			}
			r.call("POST", "/v1/tokens", map[string]string{"role": "agent"}, &tok)
			cert, err := agent.LoadOrEnroll(context.Background(), r.srv.Addr(), r.caPEM, filepath.Join(r.dir, name), name, tok.Token)
			if err != nil {
				t.Fatal(err)
			}
			tlsCfg, err := identity.ClientTLSConfig(r.caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient(r.srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if batch {
				ctx = metadata.AppendToOutgoingContext(ctx, "coffer-features", "batch")
			}
			stream, err := cofferv1.NewAgentServiceClient(conn).Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			id := "ctr-" + name
			for _, m := range []*cofferv1.AgentMessage{
				{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "test"}}},
				{Msg: &cofferv1.AgentMessage_Started{Started: &cofferv1.ContainerStarted{Container: &cofferv1.Container{Id: id, Name: id, Labels: map[string]string{"app": "web"}}}}},
			} {
				if err := stream.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			h, err := stream.Header()
			if err != nil || !slices.Contains(h.Get("coffer-features"), "batch") {
				t.Fatalf("server features = %v, %v", h.Get("coffer-features"), err)
			}
			var value []byte
			var d *cofferv1.Desired
			for d == nil {
				m, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				switch m := m.Msg.(type) {
				case *cofferv1.ServerMessage_Values:
					if batch {
						t.Fatal("Values sent to an agent that asked for Batch")
					}
					value = m.Values.Values[0].Value
				case *cofferv1.ServerMessage_Desired:
					if batch {
						t.Fatal("Desired sent to an agent that asked for Batch")
					}
					d = m.Desired
				case *cofferv1.ServerMessage_Batch:
					if !batch {
						t.Fatal("Batch sent to an agent without the feature")
					}
					value, d = m.Batch.Values.Values[0].Value, m.Batch.Desired[0]
				}
			}
			if string(value) != "v1" || d.ContainerId != id || len(d.Files) != 1 {
				t.Fatalf("got value %d bytes, desired %v", len(value), d)
			}
			ack := &cofferv1.Applied{ContainerId: id, Generation: d.Generation}
			m := &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: ack}}
			if batch {
				m = &cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_AppliedBatch{AppliedBatch: &cofferv1.AppliedBatch{Applied: []*cofferv1.Applied{ack}}}}
			}
			if err := stream.Send(m); err != nil {
				t.Fatal(err)
			}
			// The acknowledgement reaches the rollout state.
			deadline := time.Now().Add(5 * time.Second)
			for {
				var show struct {
					Holders []struct {
						ContainerID string `json:"container_id"`
						Version     uint64 `json:"version"`
					} `json:"holders"`
				}
				r.call("GET", "/v1/secrets/app/db", nil, &show)
				if slices.ContainsFunc(show.Holders, func(h struct {
					ContainerID string `json:"container_id"`
					Version     uint64 `json:"version"`
				}) bool {
					return h.ContainerID == id && h.Version == 1
				}) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("holders = %+v", show.Holders)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestOnlyLabelsLimitsTheAgent(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, rt, d, _ := r.startAgentWith("node-1", agent.Config{OnlyLabels: map[string]string{"coffer.enable": "true"}})
	rt.Start(container.Info{ID: "in", Name: "in", Labels: map[string]string{"app": "web", "coffer.enable": "true"}, PID: 1})
	rt.Start(container.Info{ID: "out", Name: "out", Labels: map[string]string{"app": "web"}, PID: 2})
	waitValue(t, d, "in", "db", "v1")
	time.Sleep(200 * time.Millisecond)
	if d.Applies("out") != 0 || a.Stats().Containers != 1 {
		t.Fatalf("agent touched a container outside --only-labels: %d applies, %+v", d.Applies("out"), a.Stats())
	}
}

// An image's labels do not opt its containers in: --only-labels looks at
// the container's own labels only.
func TestOnlyLabelsIgnoresImageLabels(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, rt, d, _ := r.startAgentWith("node-1", agent.Config{OnlyLabels: map[string]string{"coffer.enable": "true"}})
	rt.Start(container.Info{ID: "in", Name: "in", Labels: map[string]string{"app": "web", "coffer.enable": "true"}, PID: 1})
	rt.Start(container.Info{ID: "img", Name: "img", Labels: map[string]string{"app": "web"},
		ImageLabels: map[string]string{"coffer.enable": "true", "app": "web"}, PID: 2})
	waitValue(t, d, "in", "db", "v1")
	time.Sleep(200 * time.Millisecond)
	if d.Applies("img") != 0 || a.Stats().Containers != 1 {
		t.Fatalf("an image label opted a container in: %d applies, %+v", d.Applies("img"), a.Stats())
	}
}

// A value over gRPC's default 4 MiB receive limit reaches the container,
// and the agent's other containers keep getting theirs (before, the stream
// failed on every reconnect and the whole host stopped getting secrets).
func TestAgentReceivesLargeValues(t *testing.T) {
	r := newRigWith(t, func(c *server.Config) { c.MaxValueSize = 8 << 20 })
	big := strings.Repeat("B", 5<<20)
	r.put("app/big", big)
	r.put("app/db", "v1")
	r.bind("big", "app/big", "big=1")
	r.bind("web-db", "app/db", "app=web")
	_, rt, d, _ := r.startAgent("node-1")
	rt.Start(container.Info{ID: "c1", Name: "c1", Labels: map[string]string{"big": "1", "app": "web"}, PID: 1})
	rt.Start(container.Info{ID: "c2", Name: "c2", Labels: map[string]string{"app": "web"}, PID: 2})
	waitValue(t, d, "c1", "big", big)
	waitValue(t, d, "c1", "db", "v1")
	waitValue(t, d, "c2", "db", "v1")
	r.put("app/db", "v2")
	waitValue(t, d, "c2", "db", "v2")
}
