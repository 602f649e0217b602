package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"coffer/internal/containerdtest"
	"coffer/internal/kubetest"
	"coffer/test/testkit"
)

// TestContainerdPodsCheckedByTheAPIServer runs the real chain: a real
// kube-apiserver, coffer-server with --kubeconfig, and coffer-agent
// --runtime containerd (enrolled as node-1) with CRI pods made as the
// kubelet would for the API server's pods (same uid, namespace, name). The
// binding selects on the ServiceAccount, the namespace and a label that
// only the API server's pod carries: the pod scheduled on node-1 gets its
// file; a sandbox with the uid of a pod of node-2, one with an invented
// uid, and one of another ServiceAccount get nothing; deleting the pod
// from the API server removes the file from the running container.
func TestContainerdPodsCheckedByTheAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with containerd and a kube-apiserver")
	}
	d := containerdtest.Shared(t, containerdtest.Debian)
	kc := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: "coffer-server"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	kc.Allow(ctx, "coffer-server", []string{"pods"}, []string{"get", "list", "watch"})
	kc.EnsureNamespace(ctx, "shop")
	kc.EnsureServiceAccount(ctx, "shop", "web-sa")
	kc.EnsureServiceAccount(ctx, "shop", "batch-sa")
	label := "e2e-" + randID()
	cs := kc.Client()
	apiPod := func(name, node, sa string) *corev1.Pod {
		t.Helper()
		p, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web", "tier": "checked"}},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa,
				Containers: []corev1.Container{{Name: "web", Image: containerdtest.AppImage}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	web := apiPod("web-"+label, "node-1", "web-sa")
	far := apiPod("far-"+label, "node-2", "web-sa")
	batch := apiPod("batch-"+label, "node-1", "batch-sa")

	srvUser, err := kubernetes.NewForConfig(kc.Config("coffer-server"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := srvUser.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{TimeoutSeconds: new(int64(1))}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the server's user cannot watch pods: %v", err)
		}
	}

	dir := t.TempDir()
	s := &stack{t: t, dir: dir, label: label}
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"), "--kubeconfig", kc.Kubeconfig("coffer-server"))
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m", "--agent-labels", "k8s.node=node-1"))
	s.agent = testkit.Start(t, testkit.Bin(t, "coffer-agent"), "--runtime", "containerd", "--containerd-socket", d.Socket,
		"--server", s.srv.Addr, "--ca-cert", s.srv.CA, "--state-dir", filepath.Join(dir, "agent"), "--name", "node-1",
		"--node-name", "node-1", "--only-labels", "coffer.test="+label, "--join-token", join, "--nri-socket", "")
	s.eventually("agent connected", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})
	value := "checked-" + randID()
	s.srv.MustCLI(t, value, "secret", "put", "shop/db")
	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db", "--file", "db-password",
		"--selector", "k8s.serviceaccount=web-sa,k8s.namespace=shop,tier=checked")

	// The sandboxes' labels are not the API server's (no tier): the server
	// must match on the API server's.
	cri := map[string]string{"coffer.test": label, "app": "web"}
	run := func(p *corev1.Pod, uid string) string {
		t.Helper()
		ref := d.RunPod(t, containerdtest.Pod{Namespace: p.Namespace, Name: p.Name, UID: uid, Labels: cri})
		return d.RunContainer(t, ref, containerdtest.Container{Name: "web"})
	}
	webID := run(web, string(web.UID))
	farID := run(far, string(far.UID))
	batchID := run(batch, string(batch.UID))
	inventedID := run(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ghost-" + label}}, "0d7e3f0a-1111-4222-8333-444455556666")
	read := func(id string) (string, bool) {
		out, err := d.Exec(t, id, "cat", "/run/coffer/db-password")
		return out, err == nil
	}
	s.eventually("the scheduled pod's file", 20*time.Second, func() bool { got, ok := read(webID); return ok && got == value })
	s.eventually("every container reported", 20*time.Second, func() bool { return s.servedContainers() >= 4 })
	s.eventually("the refusal audited", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "audit", "ls", "--action", "agent.anomaly", "-o", "json"), "pod_not_on_node")
	})
	for name, id := range map[string]string{"other node's": farID, "other ServiceAccount's": batchID, "invented": inventedID} {
		if _, ok := read(id); ok {
			t.Errorf("the %s pod got the secret", name)
		}
	}
	var audit string // delivery records are committed shortly after they are queued
	s.eventually("the delivery record naming the pod and its ServiceAccount", 10*time.Second, func() bool {
		audit = strings.ReplaceAll(s.srv.MustCLI(t, "", "audit", "ls", "--action", "delivery.send", "-o", "json"), " ", "")
		return strings.Contains(audit, `"serviceaccount":"web-sa"`) && strings.Contains(audit, `"pod":"web-`+label+`"`)
	})

	// Deleted from the API server: the running container loses its file.
	if err := cs.CoreV1().Pods("shop").Delete(ctx, web.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	s.eventually("file revoked", 20*time.Second, func() bool { _, ok := read(webID); return !ok })
	if strings.Contains(s.srv.Logs(), value) || strings.Contains(s.agent.Logs(), value) {
		t.Error("value in logs")
	}
}
