package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/identity"
	"coffer/internal/kube/attesttest"
	"coffer/internal/server"
)

// TestK8sTokenFileEnrolls runs the coffer-agent binary as the DaemonSet
// does (--k8s-token-file, no --name, no join token) against a server that
// attests with a real kube-apiserver: it enrolls as its node (the pod's
// host name is not used), then stops at the runtime (no containerd here);
// the token is in no output.
func TestK8sTokenFileEnrolls(t *testing.T) {
	c := attesttest.Start(t)
	c.Node("node-a")
	pod := c.Pod("coffer-agent-x7k2p", "node-a", attesttest.ServiceAccount)
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "server")
	cfg.Listen = "127.0.0.1:0"
	cfg.Kubernetes.Kubeconfig = c.Kubeconfig(attesttest.ServerUser)
	cfg.Kubernetes.AgentServiceAccounts = []string{"coffer-system/coffer-agent"}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	dir := t.TempDir()
	bin := filepath.Join(dir, "coffer-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tok := c.Token(attesttest.ServiceAccount, pod, "coffer", 10*time.Minute)
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer ccancel()
	cmd := exec.CommandContext(cctx, bin, "--runtime=containerd", "--containerd-socket="+filepath.Join(dir, "no-containerd.sock"), "--nri-socket=",
		"--server="+s.Addr(), "--ca-cert="+filepath.Join(cfg.DataDir, "ca.pem"), "--state-dir="+state, "--k8s-token-file="+tokFile)
	cmd.Env = append(os.Environ(), "COFFER_JOIN_TOKEN=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no-containerd.sock") || !strings.Contains(string(out), `"name":"node-a"`) {
		t.Fatalf("coffer-agent: %v\n%s", err, out)
	}
	if strings.Contains(string(out), tok) {
		t.Fatal("the token is in the agent's output")
	}
	cert, err := identity.LoadAgentIdentity(state)
	if err != nil {
		t.Fatalf("not enrolled: %v\n%s", err, out)
	}
	name, _ := identity.AgentName(cert.Leaf)
	labels, _ := identity.AgentLabels(cert.Leaf)
	if name != "node-a" || labels["k8s.node"] != "node-a" {
		t.Fatalf("enrolled as %q %v", name, labels)
	}
	// Both credentials: refused, naming both flags.
	out, err = exec.CommandContext(cctx, bin, "--runtime=containerd", "--server="+s.Addr(), "--ca-cert="+filepath.Join(cfg.DataDir, "ca.pem"),
		"--state-dir="+t.TempDir(), "--k8s-token-file="+tokFile, "--join-token=x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not both") {
		t.Fatalf("both credentials: %v\n%s", err, out)
	}
}
