package agent_test

import (
	"context"
	"crypto/tls"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/agent"
	"coffer/internal/identity"
	"coffer/internal/kube/attesttest"
	"coffer/internal/server"
)

// k8sServer runs an in-process coffer-server that enrolls the agents of
// ServiceAccount coffer-system/coffer-agent by attestation against c.
func k8sServer(t *testing.T, c *attesttest.Cluster) (addr string, caPEM []byte, auditLog func() string, join func(map[string]any) string) {
	t.Helper()
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "server")
	cfg.Listen = "127.0.0.1:0"
	cfg.Kubernetes.Kubeconfig = c.Kubeconfig(attesttest.ServerUser)
	cfg.Kubernetes.AgentServiceAccounts = []string{"coffer-system/coffer-agent"}
	cfg.Kubernetes.AgentLabels = map[string]string{"cluster": "test"}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	caPEM, _ = os.ReadFile(filepath.Join(cfg.DataDir, "ca.pem"))
	auditLog = func() string { b, _ := os.ReadFile(filepath.Join(cfg.DataDir, "audit.log")); return string(b) }
	return s.Addr(), caPEM, auditLog, joinMaker(t, s.Addr(), caPEM, cfg.DataDir)
}

func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEnrollWithK8sTokenFile: against a real kube-apiserver, the agent of
// node-a enrolls with the token the kubelet would project into its pod and
// is named node-a with k8s.node=node-a; the refused tokens enroll nothing
// and say why; a join token still enrolls a Docker host; the token is in
// no state file and no audit record.
func TestEnrollWithK8sTokenFile(t *testing.T) {
	c := attesttest.Start(t)
	c.Node("node-a")
	pod := c.Pod("coffer-agent-x7k2p", "node-a", attesttest.ServiceAccount)
	addr, caPEM, audit, join := k8sServer(t, c)
	ctx := context.Background()
	good := c.Token(attesttest.ServiceAccount, pod, "coffer", 10*time.Minute)

	dir := t.TempDir()
	cert, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, dir, "", agent.Credential{K8sTokenFile: tokenFile(t, good)})
	if err != nil {
		t.Fatal(err)
	}
	name, _ := identity.AgentName(cert.Leaf)
	labels, _ := identity.AgentLabels(cert.Leaf)
	if name != "node-a" || !maps.Equal(labels, map[string]string{"k8s.node": "node-a", "cluster": "test"}) {
		t.Fatalf("enrolled as %q with %v", name, labels)
	}
	// Restarted, it loads its identity: the token file is not read again.
	again, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, dir, "", agent.Credential{K8sTokenFile: filepath.Join(dir, "absent")})
	if err != nil || again.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 {
		t.Fatalf("restart: %v", err)
	}
	// A join token still enrolls a Docker host beside attestation, and
	// an admin may give it k8s.node.
	docker, err := agent.LoadOrEnroll(ctx, addr, caPEM, t.TempDir(), "docker-1", join(map[string]any{"agent_labels": map[string]string{"k8s.node": "node-z"}}))
	if err != nil {
		t.Fatalf("join token: %v", err)
	}
	if l, _ := identity.AgentLabels(docker.Leaf); l["k8s.node"] != "node-z" {
		t.Fatalf("join-token agent labels %v", l)
	}
	// Every refusal below counts as a failed authentication of 127.0.0.1:
	// five, then the throttle answers 429.
	otherPod := c.Pod("other-a", "node-a", "other")
	gonePod := c.Pod("coffer-agent-gone", "node-a", attesttest.ServiceAccount)
	gone := c.Token(attesttest.ServiceAccount, gonePod, "coffer", 10*time.Minute)
	c.DeletePod(gonePod.Name)
	for _, tt := range []struct {
		desc, token, inMsg string
	}{
		{"wrong audience", c.Token(attesttest.ServiceAccount, pod, "vault", 10*time.Minute), `HTTP 401`},
		{"another ServiceAccount", c.Token("other", otherPod, "coffer", 10*time.Minute), "HTTP 403): enroll: k8s_token: ServiceAccount token may not enroll a node agent: ServiceAccount coffer-system/other is not allowed"},
		{"pod deleted", gone, "HTTP 401): enroll: k8s_token: ServiceAccount token not accepted by the API server for audience \"coffer\": [invalid bearer token, service account token has been invalidated]"},
		{"not bound to a pod", c.Token(attesttest.ServiceAccount, nil, "coffer", 10*time.Minute), "HTTP 403): enroll: k8s_token: ServiceAccount token may not enroll a node agent: the token of coffer-system/coffer-agent is not bound to a pod"},
		{"garbage", "garbage", "HTTP 401): enroll: k8s_token: ServiceAccount token not accepted: not a JWT"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			dir := t.TempDir()
			_, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, dir, "", agent.Credential{K8sTokenFile: tokenFile(t, tt.token)})
			if err == nil || !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("err = %v; want it naming %s", err, tt.inMsg)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Fatal("the error quotes the token")
			}
			if _, err := identity.LoadAgentIdentity(dir); err == nil {
				t.Fatal("a refused enrollment left an identity")
			}
		})
	}

	// A name other than the node's is refused (by another server: this
	// one now throttles 127.0.0.1).
	addr2, caPEM2, _, _ := k8sServer(t, c)
	pod2 := c.Pod("coffer-agent-b", "node-a", attesttest.ServiceAccount)
	_, err = agent.LoadOrEnrollWith(ctx, addr2, caPEM2, t.TempDir(), "web-1", agent.Credential{K8sTokenFile: tokenFile(t, c.Token(attesttest.ServiceAccount, pod2, "coffer", 10*time.Minute))})
	if err == nil || !strings.Contains(err.Error(), `not "web-1"`) {
		t.Fatalf("--name web-1 on node-a: %v", err)
	}
	// Both credentials: refused before anything is sent.
	if _, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, t.TempDir(), "", agent.Credential{JoinToken: "x", K8sTokenFile: tokenFile(t, good)}); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("both: %v", err)
	}
	// An empty or missing token file names the file.
	for _, p := range []string{tokenFile(t, ""), filepath.Join(t.TempDir(), "none")} {
		if _, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, t.TempDir(), "", agent.Credential{K8sTokenFile: p}); err == nil || !strings.Contains(err.Error(), "--k8s-token-file") {
			t.Fatalf("token file %s: %v", p, err)
		}
	}

	trail := audit()
	for _, tok := range []string{good, gone} {
		if strings.Contains(trail, tok) {
			t.Fatal("a token is in the audit trail")
		}
	}
	if !strings.Contains(trail, `"actor":"k8s:coffer-system/coffer-agent"`) || !strings.Contains(trail, `"node":"node-a"`) {
		t.Fatalf("no attested enrollment in the audit trail:\n%s", trail)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), good) {
			t.Fatalf("the token is in %s", f)
		}
	}
}

// TestReenrollAReimagedNode: node-a's agent lost its state (the node was
// reimaged) and its new pod enrolls again; the previous certificate no
// longer renews, and a join-token enrollment works beside attestation.
func TestReenrollAReimagedNode(t *testing.T) {
	c := attesttest.Start(t)
	c.Node("node-a")
	addr, caPEM, audit, _ := k8sServer(t, c)
	ctx := context.Background()
	old := c.Pod("coffer-agent-old", "node-a", attesttest.ServiceAccount)
	first, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, t.TempDir(), "", agent.Credential{K8sTokenFile: tokenFile(t, c.Token(attesttest.ServiceAccount, old, "coffer", 10*time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	// A second agent pod on node-a (made with the agents' ServiceAccount
	// beside the DaemonSet's) cannot take the node over while the first runs.
	fresh := c.Pod("coffer-agent-new", "node-a", attesttest.ServiceAccount)
	_, err = agent.LoadOrEnrollWith(ctx, addr, caPEM, t.TempDir(), "", agent.Credential{K8sTokenFile: tokenFile(t, c.Token(attesttest.ServiceAccount, fresh, "coffer", 10*time.Minute))})
	if !errors.Is(err, agent.ErrNameTaken) || !strings.Contains(err.Error(), "still runs") {
		t.Fatalf("a second pod beside a running agent: %v", err)
	}
	if err := renewWith(ctx, addr, caPEM, first); err != nil {
		t.Fatalf("the running agent was disturbed: %v", err)
	}
	c.DeletePod(old.Name)
	second, err := agent.LoadOrEnrollWith(ctx, addr, caPEM, t.TempDir(), "", agent.Credential{K8sTokenFile: tokenFile(t, c.Token(attesttest.ServiceAccount, fresh, "coffer", 10*time.Minute))})
	if err != nil {
		t.Fatalf("re-enrollment: %v", err)
	}
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("same certificate")
	}
	if err := renewWith(ctx, addr, caPEM, first); err == nil {
		t.Fatal("the replaced agent's certificate still renews")
	}
	if err := renewWith(ctx, addr, caPEM, second); err != nil {
		t.Fatalf("the new certificate: %v", err)
	}
	if !strings.Contains(audit(), `"reenrolled":"true"`) {
		t.Fatal("the re-enrollment is not audited")
	}
}

// renewWith asks the server over gRPC to renew cert, authenticating with it.
func renewWith(ctx context.Context, addr string, caPEM []byte, cert tls.Certificate) error {
	tlsCfg, err := identity.ClientTLSConfig(caPEM, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, "node-a")
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = cofferv1.NewAgentServiceClient(conn).Renew(ctx, &cofferv1.RenewRequest{Csr: csr})
	return err
}
