package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/containerdtest"
	"coffer/internal/nri"
	"coffer/test/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	containerdtest.StopShared() // the containerd the Kubernetes-node tests share
	os.Exit(code)
}

// TestContainerdPods runs coffer-agent --runtime containerd against a
// private containerd (Debian's 1.6, and 2.2.9 when built) with
// kubelet-shaped pods: a binding on a pod label and k8s.namespace reaches
// the pod's container at /run/coffer, and neither a pod with the same
// labels in another namespace nor one whose labels claim the namespace;
// a rotation reaches the running container, a revocation removes the file,
// a stop is audited as a removal, and the value is on no disk.
func TestContainerdPods(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with containerd")
	}
	for _, k := range []containerdtest.Kind{containerdtest.Debian, containerdtest.V2} {
		t.Run(k.String(), func(t *testing.T) { testContainerdPods(t, containerdtest.Shared(t, k)) })
	}
}

func testContainerdPods(t *testing.T, d *containerdtest.Daemon) {
	dir := t.TempDir()
	label := "e2e-" + randID()
	s := &stack{t: t, dir: dir, label: label}
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"))
	// A Kubernetes node agent (k8s.node): only its containers may carry
	// the k8s.* identity (the server has no kubeconfig here, so it trusts
	// the node's runtime).
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m", "--agent-labels", "k8s.node=node-1"))
	// The agent serves only this test's pods: other tests share the daemon.
	s.agent = testkit.Start(t, testkit.Bin(t, "coffer-agent"), "--runtime", "containerd", "--containerd-socket", d.Socket,
		"--server", s.srv.Addr, "--ca-cert", s.srv.CA, "--state-dir", filepath.Join(dir, "agent"), "--name", "k8s-node",
		"--node-name", "node-1", "--log-level", "debug", "--only-labels", "coffer.test="+label, "--join-token", join,
		"--nri-socket", d.NRISocket, // empty on 1.6: NRI off
		"--hook-socket", filepath.Join(dir, "hook.sock")) // never the host's /run/coffer
	s.eventually("agent connected", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})

	v1, v2 := "k8s-v1-"+randID(), "k8s-v2-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "shop/db-password")
	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop,k8s.container=web")

	labels := map[string]string{"coffer.test": label, "app": "web"}
	web := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-" + label, Labels: labels})
	webID := d.RunContainer(t, web, containerdtest.Container{Name: "web"})
	sidecarID := d.RunContainer(t, web, containerdtest.Container{Name: "sidecar"})
	other := d.RunPod(t, containerdtest.Pod{Namespace: "other", Name: "web-" + label, Labels: labels})
	otherID := d.RunContainer(t, other, containerdtest.Container{Name: "web"})
	claims := map[string]string{"coffer.test": label, "app": "web", "k8s.namespace": "shop"}
	evil := d.RunPod(t, containerdtest.Pod{Namespace: "evil", Name: "claims-" + label, Labels: claims})
	evilID := d.RunContainer(t, evil, containerdtest.Container{Name: "web"})

	read := func(id string) (string, bool) {
		out, err := d.Exec(t, id, "cat", "/run/coffer/db-password")
		return out, err == nil
	}
	waitContent := func(id, want string) {
		t.Helper()
		s.eventually("content in "+id[:12], 20*time.Second, func() bool { got, ok := read(id); return ok && got == want })
	}
	waitContent(webID, v1)
	if d.Kind == containerdtest.V2 {
		// NRI: the file is there before the container's first instruction.
		// A restart of the container (attempt 1, a new id): it must see its
		// file at its first instruction.
		first := d.RunContainer(t, web, containerdtest.Container{Name: "web", Attempt: 1, Cmd: []string{"sh", "-c", "test -s /run/coffer/db-password && echo PRESENT $(wc -c < /run/coffer/db-password) || echo MISSING; sleep 3600"}})
		s.eventually("first instruction's output", 20*time.Second, func() bool {
			out := d.Log(t, web, "web", 1)
			return strings.Contains(out, "PRESENT") || strings.Contains(out, "MISSING")
		})
		// Its size, not its value: the log is on the host's disk.
		if out := d.Log(t, web, "web", 1); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v1))) {
			t.Errorf("the container's first instruction did not see its file: %q\nagent:\n%s", out, tail(s.agent.Logs()))
		}
		d.StopContainer(t, first, 0)
	}
	s.eventually("every container reported", 20*time.Second, func() bool { return s.servedContainers() >= 4 })
	for name, id := range map[string]string{"sidecar": sidecarID, "other namespace": otherID, "claimed namespace": evilID} {
		if _, ok := read(id); ok {
			t.Errorf("the %s container got the secret", name)
		}
	}

	s.srv.MustCLI(t, v2, "secret", "put", "shop/db-password")
	waitContent(webID, v2)

	s.srv.MustCLI(t, "", "bind", "rm", "web-db")
	s.eventually("file revoked", 20*time.Second, func() bool { _, ok := read(webID); return !ok })

	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop,k8s.container=web")
	waitContent(webID, v2)
	d.StopContainer(t, webID, 0)
	s.eventually("removal audited", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "audit", "ls", "--action", "delivery.remove", "-o", "json"), webID)
	})
	audit := s.srv.MustCLI(t, "", "audit", "ls", "--secret", "shop/db-password", "-o", "json")
	if !strings.Contains(audit, "shop/web-"+label+"/web") {
		t.Errorf("audit records do not name the pod's container:\n%s", tail(audit))
	}

	if d.Kind == containerdtest.V2 {
		// Fail-closed per pod: while the server is down, a pod annotated
		// coffer/require-secrets=true does not start; the kubelet's retry
		// (a new attempt) starts with its file once the server is back.
		s.srv.Stop()
		s.eventually("agent disconnected", 20*time.Second, func() bool { return strings.Contains(s.agent.Logs(), "no server stream") })
		strict := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "strict-" + label, Labels: labels,
			Annotations: map[string]string{nri.RequireAnnotation: "true"}})
		present := []string{"sh", "-c", "test -s /run/coffer/db-password && echo PRESENT $(wc -c < /run/coffer/db-password) || echo MISSING; sleep 3600"}
		if _, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Cmd: present}); err == nil || !strings.Contains(err.Error(), nri.RequireAnnotation) {
			t.Fatalf("a pod requiring its secrets started while the server was down: %v", err)
		}
		s.srv = testkit.StartServerAt(t, s.srv.Addr, s.srv.DataDir)
		attempt := uint32(0)
		s.eventually("the retry started", 30*time.Second, func() bool {
			attempt++
			_, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Attempt: attempt, Cmd: present})
			if err != nil {
				time.Sleep(500 * time.Millisecond) // the kubelet's back-off, shortened
			}
			return err == nil
		})
		s.eventually("the retry's first instruction ran", 20*time.Second, func() bool {
			return strings.Contains(d.Log(t, strict, "web", attempt), "PRESENT") || strings.Contains(d.Log(t, strict, "web", attempt), "MISSING")
		})
		if out := d.Log(t, strict, "web", attempt); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v2))) {
			t.Errorf("the retry's first instruction did not see its file: %q", out)
		}
	}

	s.srv.Stop()
	s.agent.Stop()
	for _, v := range []string{v1, v2} {
		for _, root := range []string{d.Dir, dir} { // containerd's root and state, the server's and agent's dirs
			if hits := grepTree(root, v); len(hits) > 0 {
				t.Errorf("value found on disk: %v", hits)
			}
		}
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) {
			t.Error("value in logs")
		}
	}
	if d.Kind == containerdtest.V2 && !strings.Contains(s.agent.Logs(), "NRI plugin registered") {
		t.Errorf("the agent's NRI plugin did not register:\n%s", tail(s.agent.Logs()))
	}
	if !strings.Contains(s.agent.Logs(), `"runtime":"containerd"`) {
		t.Errorf("agent did not log its runtime:\n%s", tail(s.agent.Logs()))
	}
}
