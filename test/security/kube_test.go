package security_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/audit"
	"coffer/internal/kubetest"
	"coffer/test/security/hostile"
	"coffer/test/testkit"
)

// Root on a Kubernetes node (here: node-a's stolen agent key, driven by
// hand) used to get the secrets of any pod it could describe. With
// --kubeconfig the server confirms every container against the API server:
// a pod of another node, the node's own pod with forged labels, namespace
// or ServiceAccount, and an invented pod get nothing (and are recorded);
// a real pod of node-a gets its secrets, matched on the API server's
// labels and ServiceAccount; deleting the pod revokes them. A kubeconfig
// that may not watch pods fails the server at start.
func TestNodeAgentGetsOnlyPodsScheduledOnItsNode(t *testing.T) {
	if testing.Short() {
		t.Skip("security tests run real servers")
	}
	kc := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: "coffer-server"}, {Name: "nobody"}}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	kc.Allow(ctx, "coffer-server", []string{"pods"}, []string{"get", "list", "watch"})
	for _, ns := range []string{"shop", "dev"} {
		kc.EnsureNamespace(ctx, ns)
	}
	kc.EnsureServiceAccount(ctx, "shop", "web-sa")
	kc.EnsureServiceAccount(ctx, "shop", "batch-sa")
	cs := kc.Client()
	mk := func(ns, name, node, sa string, labels map[string]string) *corev1.Pod {
		t.Helper()
		p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa,
				Containers: []corev1.Container{{Name: "web", Image: "local.test/app:1"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, name, err)
		}
		return p
	}
	web := map[string]string{"app": "web"}
	webA := mk("shop", "web-a", "node-a", "web-sa", web)
	batchA := mk("shop", "batch-a", "node-a", "batch-sa", web)
	webB := mk("shop", "web-b", "node-b", "web-sa", web)
	devA := mk("dev", "tool", "node-a", "default", map[string]string{"app": "tool"})

	// A kubeconfig that may not watch pods: the server does not start.
	denied := kc.Kubeconfig("nobody")
	cmd := exec.CommandContext(ctx, testkit.Bin(t, "coffer-server"), "--data-dir", filepath.Join(t.TempDir(), "denied"),
		"--listen", testkit.FreeAddr(t), "--kubeconfig", denied)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), denied) || !strings.Contains(string(out), "may not list pods") {
		t.Fatalf("coffer-server with a kubeconfig that may not list pods: %v\n%s", err, out)
	}

	// RBAC's authorizer learns of the server's role through its informer.
	kcfg := kc.Kubeconfig("coffer-server")
	srvClient, err := kubernetes.NewForConfig(kc.Config("coffer-server"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := srvClient.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{TimeoutSeconds: new(int64(1))})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's user cannot watch pods: %v", err)
		}
	}

	srv, admin := start(t, "--kubeconfig", kcfg)
	value := "db-" + t.Name()
	admin.PutSecret(t, "shop/db", []byte(value))
	srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db", "--file", "db-password",
		"--selector", "k8s.serviceaccount=web-sa,k8s.namespace=shop")
	join := admin.NewToken(t, map[string]any{"role": "agent", "agent_labels": map[string]string{"k8s.node": "node-a"}})
	node := hostile.Enroll(t, srv, "node-a", join).Dial(t)

	report := func(id string, uid, ns, name string, labels map[string]string) {
		t.Helper()
		c := hostile.Container(id, labels)
		c.Pod = &cofferv1.Pod{Uid: uid, Namespace: ns, Name: name, Container: "web"}
		if err := node.Report(c); err != nil {
			t.Fatal(err)
		}
	}
	forged := map[string]string{"app": "web", "k8s.namespace": "shop", "k8s.serviceaccount": "web-sa", "k8s.pod": "web-a"}
	report("a-other-node", string(webB.UID), "shop", "web-b", forged)                     // (a) a pod of node-b
	report("b-forged-labels", string(devA.UID), "dev", "tool", forged)                    // (b) its own pod, forged labels and SA
	report("b-forged-ns", string(devA.UID), "shop", "web-a", forged)                      // (b) its own pod, forged namespace
	report("c-invented", "5b9f1c9e-0000-4000-8000-000000000000", "shop", "web-z", forged) // (c)
	report("d-other-sa", string(batchA.UID), "shop", "batch-a", forged)                   // a real pod of another SA
	report("d-real", string(webA.UID), "shop", "web-a", nil)                              // (d)
	node.WaitFiles("d-real", "db-password=shop/db@1")
	for _, id := range []string{"a-other-node", "b-forged-labels", "b-forged-ns", "d-other-sa"} {
		node.WaitFiles(id, "")
	}
	if fs, ok := node.Files("c-invented"); ok {
		t.Errorf("an invented pod was sent a state: %q", fs)
	}
	if got := node.Received(); len(got) != 1 || got[0] != "shop/db@1" {
		t.Errorf("node-a received %v", got)
	}
	for id, reason := range map[string]string{"a-other-node": "pod_not_on_node", "b-forged-ns": "pod_identity_mismatch"} {
		admin.WaitAudit(t, "agent.anomaly", 1, func(e audit.Event) bool {
			return e.Details["container_id"] == id && e.Details["reason"] == reason && e.Actor == "agent:node-a"
		})
	}
	// Counted in the agent listing: (a) and the forged namespace (and (c)
	// once past its 30 s grace).
	if v := admin.Agents(t)["node-a"]; v.PodRefusals < 2 || !strings.HasPrefix(v.LastAnomalyReason, "pod_") {
		t.Errorf("agent listing of node-a: %+v", v)
	}
	send := admin.WaitAudit(t, "delivery.send", 1, func(e audit.Event) bool { return e.Details["container_id"] == "d-real" })
	if d := send[0].Details; d["namespace"] != "shop" || d["pod"] != "web-a" || d["serviceaccount"] != "web-sa" || d["container"] != "shop/web-a/web" {
		t.Errorf("delivery record = %v", d)
	}

	// The pod is deleted: its container loses the secret.
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "web-a", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	node.WaitFiles("d-real", "")
	// A new version reaches no container of node-a.
	admin.PutSecret(t, "shop/db", []byte(value+"-2"))
	time.Sleep(200 * time.Millisecond)
	if got := node.Received(); len(got) != 1 {
		t.Errorf("after the deletion node-a received %v", got)
	}
	for _, e := range admin.Audit(t, "", nil) {
		if strings.Contains(strings.Join(mapValues(e.Details), " "), value) {
			t.Fatalf("audit record %s holds the value", e.Action)
		}
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
