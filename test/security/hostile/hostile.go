// Package hostile is a hand-driven hostile coffer-agent for security tests:
// it enrolls with a join token through the real API, then speaks the agent
// protocol (gRPC Sync and Renew over mutual TLS) directly with its own
// certificate, and does what coffer-agent never does: it reports invented
// containers with any ids, labels and image labels, never acknowledges,
// replays old certificates and announces whatever limits it likes. It
// records everything the server sends it, so that tests can show what a
// stolen agent key, a scoped token's agent or a hostile image gets (and
// does not get).
//
// It also has a small admin client for the REST API (Admin) and helpers to
// read the audit trail and the agent listing, which the tests use to check
// that an attack leaves a record.
package hostile

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
	"coffer/internal/identity"
	"coffer/test/testkit"
)

// Admin is a REST client for a server, with a bearer token.
type Admin struct {
	Srv   *testkit.Server
	Token string
	hc    *http.Client
}

// NewAdmin returns a client for srv with its bootstrap admin token.
func NewAdmin(t testing.TB, srv *testkit.Server) *Admin {
	t.Helper()
	caPEM, err := os.ReadFile(srv.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &Admin{Srv: srv, Token: srv.Token, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}}
}

// As returns a client that uses token instead.
func (a *Admin) As(token string) *Admin {
	b := *a
	b.Token = token
	return &b
}

// Do sends a request with body as JSON (nil: none) and decodes the answer
// into out (nil: ignored). It returns the HTTP status and any transport or
// decoding error; a status >= 300 is not an error here.
func (a *Admin) Do(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+a.Srv.Addr+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 && len(data) > 0 {
		return resp.StatusCode, json.Unmarshal(data, out)
	}
	return resp.StatusCode, nil
}

// Must is Do that fails the test on an error or a status >= 300.
func (a *Admin) Must(t testing.TB, method, path string, body, out any) {
	t.Helper()
	code, err := a.Do(method, path, body, out)
	if err != nil || code >= 300 {
		t.Fatalf("%s %s: %d %v", method, path, code, err)
	}
}

// PutSecret stores a new version of a secret.
func (a *Admin) PutSecret(t testing.TB, name string, value []byte) {
	t.Helper()
	a.Must(t, "PUT", "/v1/secrets/"+name, map[string]string{"value": base64.StdEncoding.EncodeToString(value)}, nil)
}

// Bind creates or replaces a binding (fields as in the API: secret,
// selector, image, hosts, file, ...).
func (a *Admin) Bind(t testing.TB, name string, fields map[string]any) {
	t.Helper()
	a.Must(t, "PUT", "/v1/bindings/"+name, fields, nil)
}

// NewToken creates a token with the request's fields (role, scope, ttl,
// ...) and returns it.
func (a *Admin) NewToken(t testing.TB, fields map[string]any) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	a.Must(t, "POST", "/v1/tokens", fields, &out)
	return out.Token
}

// JoinToken creates an agent join token.
func (a *Admin) JoinToken(t testing.TB) string {
	t.Helper()
	return a.NewToken(t, map[string]any{"role": "agent"})
}

// AgentView is an agent as the API lists it.
type AgentView struct {
	Name              string    `json:"name"`
	Connected         bool      `json:"connected"`
	Containers        int       `json:"containers"`
	ReportsLimited    uint64    `json:"reports_limited"`
	IDConflicts       uint64    `json:"id_conflicts"`
	PodRefusals       uint64    `json:"pod_refusals"`
	LastAnomaly       time.Time `json:"last_anomaly"`
	LastAnomalyReason string    `json:"last_anomaly_reason"`
}

// Agents lists the agents the client may see, by name.
func (a *Admin) Agents(t testing.TB) map[string]AgentView {
	t.Helper()
	var vs []AgentView
	a.Must(t, "GET", "/v1/agents", nil, &vs)
	out := map[string]AgentView{}
	for _, v := range vs {
		out[v.Name] = v
	}
	return out
}

// Audit returns the records of action (all if "") for which match holds
// (all if nil).
func (a *Admin) Audit(t testing.TB, action string, match func(audit.Event) bool) []audit.Event {
	t.Helper()
	var evs []audit.Event
	path := "/v1/audit"
	if action != "" {
		path += "?action=" + action
	}
	a.Must(t, "GET", path, nil, &evs)
	var out []audit.Event
	for _, e := range evs {
		if match == nil || match(e) {
			out = append(out, e)
		}
	}
	return out
}

// WaitAudit waits until at least n records of action match (the broker
// appends delivery records off the streams, a moment later), and returns
// them.
func (a *Admin) WaitAudit(t testing.TB, action string, n int, match func(audit.Event) bool) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := a.Audit(t, action, match)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s records match, want %d", len(got), action, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Agent is an enrolled hostile agent: its name and certificates.
type Agent struct {
	Name  string
	Cert  tls.Certificate   // the current certificate
	Old   []tls.Certificate // the certificates it had before, oldest first
	srv   *testkit.Server
	caPEM []byte
}

// Enroll enrolls agent name with joinToken through POST /v1/enroll.
func Enroll(t testing.TB, srv *testkit.Server, name, joinToken string) *Agent {
	t.Helper()
	a, err := EnrollErr(srv, name, joinToken)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// EnrollErr is Enroll that returns the server's refusal as an error.
func EnrollErr(srv *testkit.Server, name, joinToken string) (*Agent, error) {
	caPEM, err := os.ReadFile(srv.CA)
	if err != nil {
		return nil, err
	}
	key, err := identity.NewAgentKey()
	if err != nil {
		return nil, err
	}
	csr, err := identity.NewCSR(key, name)
	if err != nil {
		return nil, err
	}
	cfg, err := identity.ClientTLSConfig(caPEM, nil)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	body, _ := json.Marshal(map[string]any{"join_token": joinToken, "name": name, "csr": csr})
	resp, err := hc.Post("https://"+srv.Addr+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll %s: HTTP %d: %s", name, resp.StatusCode, data)
	}
	var out struct {
		Certificate []byte `json:"certificate"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(out.Certificate)
	if err != nil {
		return nil, err
	}
	return &Agent{Name: name, Cert: tls.Certificate{Certificate: [][]byte{out.Certificate}, PrivateKey: key, Leaf: leaf}, srv: srv, caPEM: caPEM}, nil
}

func (a *Agent) conn(cert tls.Certificate, recvLimit int) (*grpc.ClientConn, error) {
	cfg, err := identity.ClientTLSConfig(a.caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if recvLimit > 0 {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(recvLimit)))
	}
	return grpc.NewClient(a.srv.Addr, opts...)
}

// Renew asks for a new certificate with the current one; the current one
// moves to Old.
func (a *Agent) Renew(t testing.TB) {
	t.Helper()
	c, err := a.RenewWith(a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	a.Old = append(a.Old, a.Cert)
	a.Cert = c
}

// RenewWith asks for a new certificate, authenticating with cert (which
// may be an old one), and returns it.
func (a *Agent) RenewWith(cert tls.Certificate) (tls.Certificate, error) {
	conn, err := a.conn(cert, 0)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer conn.Close()
	key, err := identity.NewAgentKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := identity.NewCSR(key, a.Name)
	if err != nil {
		return tls.Certificate{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cofferv1.NewAgentServiceClient(conn).Renew(ctx, &cofferv1.RenewRequest{Csr: csr})
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{resp.GetCertificate()}, PrivateKey: key, Leaf: leaf}, nil
}

// Option changes how Dial opens a stream.
type Option func(*dialOptions)

type dialOptions struct {
	cert      *tls.Certificate
	recvLimit int
	md        []string
}

// WithCert dials with cert instead of the agent's current certificate.
func WithCert(cert tls.Certificate) Option { return func(o *dialOptions) { o.cert = &cert } }

// WithRecvLimit sets the client's gRPC receive limit (default: gRPC's own,
// 4 MiB, as an agent built before the size negotiation).
func WithRecvLimit(n int) Option { return func(o *dialOptions) { o.recvLimit = n } }

// WithMetadata adds request metadata, e.g. cofferv1.FeaturesKey,
// cofferv1.FeatureBatch or cofferv1.MaxRecvKey, "1048576".
func WithMetadata(kv ...string) Option { return func(o *dialOptions) { o.md = append(o.md, kv...) } }

// Stream is an open Sync stream and what the server sent on it.
type Stream struct {
	t      testing.TB
	stream cofferv1.AgentService_SyncClient
	done   chan struct{}
	err    error // why it ended; set before done is closed

	mu      sync.Mutex
	values  map[string][]byte            // "secret@version" → value
	desired map[string]*cofferv1.Desired // by container id, the newest
	n       int                          // messages received
}

// Dial opens a Sync stream and sends Hello. It fails the test if the
// stream cannot be opened (a refusal shows later, as the stream ending:
// see Closed).
func (a *Agent) Dial(t testing.TB, opts ...Option) *Stream {
	t.Helper()
	var o dialOptions
	for _, f := range opts {
		f(&o)
	}
	cert := a.Cert
	if o.cert != nil {
		cert = *o.cert
	}
	conn, err := a.conn(cert, o.recvLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if len(o.md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, o.md...)
	}
	stream, err := cofferv1.NewAgentServiceClient(conn).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &Stream{t: t, stream: stream, done: make(chan struct{}), values: map[string][]byte{}, desired: map[string]*cofferv1.Desired{}}
	go s.recv()
	s.Send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Hello{Hello: &cofferv1.Hello{Version: "hostile/1"}}})
	return s
}

func (s *Stream) recv() {
	defer close(s.done)
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.err = err
			return
		}
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
		s.mu.Lock()
		s.n++
		for _, v := range vals {
			s.values[fmt.Sprintf("%s@%d", v.Secret, v.Version)] = v.Value
		}
		for _, d := range ds {
			s.desired[d.ContainerId] = d
		}
		s.mu.Unlock()
	}
}

// Send sends m; an error (the stream is gone) is returned, not fatal.
func (s *Stream) Send(m *cofferv1.AgentMessage) error { return s.stream.Send(m) }

// Container is a report of container id with labels, image "img:1" and a
// made-up digest.
func Container(id string, labels map[string]string) *cofferv1.Container {
	return &cofferv1.Container{Id: id, Name: "hostile-" + id, Labels: labels, Image: "img:1", ImageDigest: "sha256:" + strings.Repeat("0", 64)}
}

// Report reports a container as started.
func (s *Stream) Report(c *cofferv1.Container) error {
	return s.Send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Started{Started: &cofferv1.ContainerStarted{Container: c}}})
}

// Stop reports a container as stopped.
func (s *Stream) Stop(id string) error {
	return s.Send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Stopped{Stopped: &cofferv1.ContainerStopped{Id: id}}})
}

// Ack acknowledges container id's newest Desired state (coffer-agent does
// this after applying it; a hostile agent may never).
func (s *Stream) Ack(id string) error {
	s.mu.Lock()
	gen := s.desired[id].GetGeneration()
	s.mu.Unlock()
	return s.Send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{ContainerId: id, Generation: gen}}})
}

// Files returns container id's newest Desired state as "file=secret@version"
// items, sorted and comma-separated ("" for none), and whether any came.
func (s *Stream) Files(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.desired[id]
	var fs []string
	for _, f := range d.GetFiles() {
		fs = append(fs, fmt.Sprintf("%s=%s@%d", f.File, f.Secret, f.Version))
	}
	slices.Sort(fs)
	return strings.Join(fs, ","), ok
}

// Received lists the secret versions received ("secret@version", sorted).
func (s *Stream) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(func(yield func(string) bool) {
		for k := range s.values {
			if !yield(k) {
				return
			}
		}
	})
}

// Value returns the value received for "secret@version".
func (s *Stream) Value(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	return v, ok
}

// WaitFiles waits until container id's Desired state is want (see Files).
func (s *Stream) WaitFiles(id, want string) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, ok := s.Files(id)
		if ok && got == want {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("container %s: stream ended (%v) with files %q, want %q", id, s.err, got, want)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("container %s: files %q (state received: %v), want %q", id, got, ok, want)
		}
	}
}

// Closed waits up to within for the server to end the stream and reports
// whether it ended, and why.
func (s *Stream) Closed(within time.Duration) (bool, error) {
	select {
	case <-s.done:
		return true, s.err
	case <-time.After(within):
		return false, nil
	}
}
