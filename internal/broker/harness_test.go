package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/internal/identity"
	"coffer/internal/policy"
	"coffer/internal/secret"
)

// The rig runs a Broker's gRPC service on 127.0.0.1 with real mutual TLS
// (a CA made for the test), in front of an in-memory fleet, catalog and
// audit trail, and dials it as agents that speak the protocol by hand.

type fakeHost struct {
	labels map[string]string
	scope  string
}

// fakeAgents is the fleet: agents by name, with the labels and scope an
// admin gave them.
type fakeAgents struct {
	mu     sync.Mutex
	agents map[string]fakeHost
}

func (f *fakeAgents) Verify(cert *x509.Certificate) (string, error) {
	name, err := identity.AgentName(cert)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.agents[name]; !ok {
		return "", fmt.Errorf("agent %s: unknown or revoked agent", name)
	}
	return name, nil
}

func (f *fakeAgents) Seen(string, string) {}

func (f *fakeAgents) Renew(context.Context, string, string, []byte) ([]byte, error) {
	return nil, errors.New("not in this fleet")
}

func (f *fakeAgents) Host(name string) (map[string]string, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.agents[name]
	return h.labels, h.scope, ok
}

func (f *fakeAgents) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.agents, name)
}

// fakeCatalog holds bindings and secret versions in memory.
type fakeCatalog struct {
	mu      sync.Mutex
	set     *policy.Set
	current map[string]uint64
	values  map[verKey][]byte
}

func (c *fakeCatalog) Bindings() *policy.Set {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set
}

func (c *fakeCatalog) Current(_ context.Context, name string) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current[name], nil
}

func (c *fakeCatalog) Value(_ context.Context, name string, v uint64) (secret.Value, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	val, ok := c.values[verKey{name, v}]
	if !ok {
		return nil, errors.New("no such version")
	}
	return secret.Value(slices.Clone(val)), nil
}

// recAuditor is the audit trail.
type recAuditor struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *recAuditor) Append(_ context.Context, e audit.Event) (audit.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return e, nil
}

// find returns the records of action for which match holds.
func (a *recAuditor) find(action string, match func(audit.Event) bool) []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []audit.Event
	for _, e := range a.events {
		if e.Action == action && (match == nil || match(e)) {
			out = append(out, e)
		}
	}
	return out
}

type rig struct {
	t      *testing.T
	b      *Broker
	cat    *fakeCatalog
	agents *fakeAgents
	aud    *recAuditor
	ca     *identity.CA
	caPEM  []byte
	addr   string
}

// newRig starts a broker; adjust (if not nil) changes its Config, and
// setup (if not nil) sets test hooks on the Broker before it serves.
func newRig(t *testing.T, adjust func(*Config), setup func(*Broker)) *rig {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.LoadOrIssueServerCert(dir, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := policy.NewSet(nil)
	r := &rig{
		t: t, ca: ca, caPEM: caPEM,
		cat:    &fakeCatalog{set: set, current: map[string]uint64{}, values: map[verKey][]byte{}},
		agents: &fakeAgents{agents: map[string]fakeHost{}},
		aud:    &recAuditor{},
	}
	cfg := Config{Catalog: r.cat, Audit: r.aud, Agents: r.agents}
	if adjust != nil {
		adjust(&cfg)
	}
	r.b = New(cfg)
	if setup != nil {
		setup(r.b)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerTLSConfig(cert, ca))))
	cofferv1.RegisterAgentServiceServer(gs, r.b.Service())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return r
}

// put stores a new version of a secret and tells the broker.
func (r *rig) put(name string, value []byte) uint64 {
	r.cat.mu.Lock()
	v := r.cat.current[name] + 1
	r.cat.current[name] = v
	r.cat.values[verKey{name, v}] = value
	r.cat.mu.Unlock()
	r.b.Changed(catalog.Change{Kind: catalog.SecretPut, Secret: name, Version: v})
	return v
}

// bind adds a binding and tells the broker.
func (r *rig) bind(b policy.Binding) {
	r.cat.mu.Lock()
	set, err := r.cat.set.With(b)
	if err != nil {
		r.cat.mu.Unlock()
		r.t.Fatal(err)
	}
	r.cat.set = set
	r.cat.mu.Unlock()
	r.b.Changed(catalog.Change{Kind: catalog.BindingPut, Binding: b.Name})
}

// enroll adds agent name to the fleet and returns its certificate.
func (r *rig) enroll(name string, labels map[string]string, scope string) tls.Certificate {
	r.t.Helper()
	key, err := identity.NewAgentKey()
	if err != nil {
		r.t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, name)
	if err != nil {
		r.t.Fatal(err)
	}
	der, err := r.ca.SignAgentCSR(csr, name, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	r.agents.mu.Lock()
	r.agents.agents[name] = fakeHost{labels: labels, scope: scope}
	r.agents.mu.Unlock()
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// client is one hand-driven agent stream.
type client struct {
	t      *testing.T
	stream cofferv1.AgentService_SyncClient
	msgs   chan *cofferv1.ServerMessage
	done   chan struct{}
	err    error // set before done is closed

	mu       sync.Mutex
	values   map[verKey][]byte
	desired  map[string]*cofferv1.Desired
	messages int // received
}

// dial opens a Sync stream as cert, with the request metadata md
// (key, value pairs), and sends Hello. The client accepts messages up to
// coffer-agent's limit.
func (r *rig) dial(cert tls.Certificate, md ...string) *client {
	r.t.Helper()
	return r.dialLimit(cert, cofferv1.AgentMaxRecv, md...)
}

// dialLimit is dial with a gRPC receive limit of recvLimit bytes (0:
// gRPC's default, as agents built before the size negotiation).
func (r *rig) dialLimit(cert tls.Certificate, recvLimit int, md ...string) *client {
	r.t.Helper()
	cfg, err := identity.ClientTLSConfig(r.caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		r.t.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if recvLimit > 0 {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(recvLimit)))
	}
	conn, err := grpc.NewClient(r.addr, opts...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	stream, err := cofferv1.NewAgentServiceClient(conn).Sync(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	c := &client{t: r.t, stream: stream, msgs: make(chan *cofferv1.ServerMessage, 1024), done: make(chan struct{}),
		values: map[verKey][]byte{}, desired: map[string]*cofferv1.Desired{}}
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "broker-test"}}})
	go func() {
		defer close(c.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				c.err = err
				return
			}
			c.record(m)
		}
	}()
	return c
}

func (c *client) record(m *cofferv1.ServerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages++
	var vals []*cofferv1.SecretValue
	var ds []*cofferv1.Desired
	switch m := m.Msg.(type) {
	case *cofferv1.ServerMessage_Values:
		vals = m.Values.GetValues()
	case *cofferv1.ServerMessage_Desired:
		ds = []*cofferv1.Desired{m.Desired}
	case *cofferv1.ServerMessage_Batch:
		vals, ds = m.Batch.GetValues().GetValues(), m.Batch.GetDesired()
	}
	for _, v := range vals {
		c.values[verKey{v.Secret, v.Version}] = v.Value
	}
	for _, d := range ds {
		c.desired[d.ContainerId] = d
	}
}

func (c *client) send(m *cofferv1.AgentMessage) {
	c.t.Helper()
	if err := c.stream.Send(m); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) report(ctr *cofferv1.Container) {
	c.t.Helper()
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Started{Started: &cofferv1.ContainerStarted{Container: ctr}}})
}

func (c *client) stop(id string) {
	c.t.Helper()
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Stopped{Stopped: &cofferv1.ContainerStopped{Id: id}}})
}

func (c *client) ack(id string, gen uint64) {
	c.t.Helper()
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{ContainerId: id, Generation: gen}}})
}

// files returns the files of container id's last Desired state, by file
// name, as "secret@version", and whether any Desired state came for it.
func (c *client) files(id string) (map[string]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.desired[id]
	out := map[string]string{}
	for _, f := range d.GetFiles() {
		out[f.File] = fmt.Sprintf("%s@%d", f.Secret, f.Version)
	}
	return out, ok
}

// values lists the secret versions received, as "secret@version".
func (c *client) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k := range c.values {
		out = append(out, fmt.Sprintf("%s@%d", k.secret, k.version))
	}
	slices.Sort(out)
	return out
}

func (c *client) generation(id string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desired[id].GetGeneration()
}

// waitFiles waits until container id's Desired state is want (files as
// "file=secret@version", sorted, comma-separated; "" for none).
func (c *client) waitFiles(id, want string) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fs, ok := c.files(id)
		var got []string
		for f, v := range fs {
			got = append(got, f+"="+v)
		}
		slices.Sort(got)
		if ok && strings.Join(got, ",") == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("container %s: files %q (state received: %v), want %q", id, got, ok, want)
		}
		select {
		case <-c.done:
			c.t.Fatalf("container %s: stream ended (%v) with files %q, want %q", id, c.err, got, want)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// closed waits until the server ends the stream and returns its error, or
// fails the test.
func (c *client) closed(within time.Duration) error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(within):
		c.t.Fatal("stream still open")
		return nil
	}
}

// open reports whether the stream is still open after d.
func (c *client) open(d time.Duration) bool {
	select {
	case <-c.done:
		return false
	case <-time.After(d):
		return true
	}
}

// waitAudit waits until the audit trail holds n records of action that
// match, and returns them.
func (r *rig) waitAudit(action string, n int, match func(audit.Event) bool) []audit.Event {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := r.aud.find(action, match)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d %s records, want %d", len(got), action, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctrInfo(id string, labels map[string]string) *cofferv1.Container {
	return &cofferv1.Container{Id: id, Name: "name-" + id, Labels: labels, Image: "img:1", ImageDigest: "sha256:" + strings.Repeat("a", 64)}
}

func binding(name, secretName, selector string) policy.Binding {
	return policy.Binding{Name: name, Secret: secretName, Selector: selector}
}
