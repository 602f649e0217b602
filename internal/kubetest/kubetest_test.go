package kubetest_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"coffer/internal/kubetest"
)

// TestCluster starts a real API server, creates a pod bound to a node, and
// checks that RBAC applies to the static-token users.
func TestCluster(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: "nobody"}, {Name: "watcher"}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.EnsureNamespace(ctx, "shop")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName:   "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "local.test/app:1"}},
		},
	}
	if _, err := c.Client().CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}

	nobody, err := kubernetes.NewForConfig(c.Config("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nobody.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a user without a role listed pods: %v", err)
	}
	c.Allow(ctx, "watcher", []string{"pods"}, []string{"list", "watch"})
	watcher, err := kubernetes.NewForConfig(c.Config("watcher"))
	if err != nil {
		t.Fatal(err)
	}
	// RBAC's authorizer learns of new bindings through its own informer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err := watcher.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-a"})
		if err == nil {
			if len(pods.Items) != 1 || pods.Items[0].Spec.ServiceAccountName != "default" {
				t.Fatalf("pods on node-a: %+v", pods.Items)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher cannot list pods: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
