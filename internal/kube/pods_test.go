package kube_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"

	"coffer/internal/kube"
	"coffer/internal/kubetest"
)

// Users of the test cluster: the server's (get, list, watch pods), one
// without any role, one that may list but not watch.
const (
	serverUser = "coffer-server"
	nobody     = "nobody"
	listOnly   = "list-only"
)

func startCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: serverUser}, {Name: nobody}, {Name: listOnly}}})
	ctx := t.Context()
	c.Allow(ctx, serverUser, []string{"pods"}, []string{"get", "list", "watch"})
	c.Allow(ctx, listOnly, []string{"pods"}, []string{"list"})
	return c
}

// open loads user's kubeconfig and starts an index, with its notifications
// on a channel.
func open(t *testing.T, path string) (*kube.Pods, <-chan string, error) {
	t.Helper()
	cfg, err := kube.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kube.NewPods(cfg, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1024)
	p.Subscribe(func(uid string) { ch <- uid })
	err = p.Start(t.Context())
	if err == nil {
		t.Cleanup(p.Close)
	}
	return p, ch, err
}

// waitAllowed retries open until RBAC's authorizer knows the user's new
// role (it learns of bindings through its own informer).
func waitAllowed(t *testing.T, path string) (*kube.Pods, <-chan string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, ch, err := open(t, path)
		if err == nil {
			return p, ch
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's user cannot watch pods: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitPod(t *testing.T, p *kube.Pods, uid types.UID, want func(kube.Pod, bool) bool) kube.Pod {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, ok := p.Pod(string(uid))
		if want(got, ok) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: %+v (%v)", uid, got, ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNotified waits until uid is notified.
func waitNotified(t *testing.T, ch <-chan string, uid types.UID) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == string(uid) {
				return
			}
		case <-timeout:
			t.Fatalf("no notification for pod %s", uid)
		}
	}
}

func TestPods(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cs := c.Client()
	c.EnsureNamespace(ctx, "shop")
	c.EnsureServiceAccount(ctx, "shop", "web-sa")
	mk := func(name, node string, labels map[string]string) *corev1.Pod {
		t.Helper()
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName: node, ServiceAccountName: "web-sa",
				InitContainers: []corev1.Container{{Name: "init", Image: "local.test/app:1"}},
				Containers:     []corev1.Container{{Name: "web", Image: "local.test/app:1"}, {Name: "istio", Image: "local.test/app:1"}},
			},
		}
		got, err := cs.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
		return got
	}
	// Before the index starts: listed.
	before := mk("web-1", "node-a", map[string]string{"app": "web"})
	unbound := mk("pending", "", map[string]string{"app": "web"})

	t.Run("forbidden", func(t *testing.T) {
		for user, verb := range map[string]string{nobody: "list", listOnly: "watch"} {
			path := c.Kubeconfig(user)
			_, _, err := open(t, path)
			// RBAC's authorizer learns of list-only's role through its
			// own informer: until then it may not list either.
			for deadline := time.Now().Add(30 * time.Second); verb == "watch" && err != nil &&
				strings.Contains(err.Error(), "may not list") && time.Now().Before(deadline); {
				time.Sleep(200 * time.Millisecond)
				_, _, err = open(t, path)
			}
			if !errors.Is(err, kube.ErrPods) || !strings.Contains(err.Error(), path) ||
				!strings.Contains(err.Error(), "may not "+verb+" pods") || !strings.Contains(err.Error(), "get, list and watch") {
				t.Errorf("%s: Start = %v", user, err)
			}
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		kc, err := clientcmd.LoadFromFile(c.Kubeconfig(nobody))
		if err != nil {
			t.Fatal(err)
		}
		kc.Clusters["kubetest"].Server = "https://127.0.0.1:1"
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			t.Fatal(err)
		}
		_, _, err = open(t, path)
		if !errors.Is(err, kube.ErrPods) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "reachable") {
			t.Errorf("Start = %v", err)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		kc, err := clientcmd.LoadFromFile(c.Kubeconfig(nobody))
		if err != nil {
			t.Fatal(err)
		}
		kc.AuthInfos[nobody].Token = "not-a-token"
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			t.Fatal(err)
		}
		_, _, err = open(t, path)
		if !errors.Is(err, kube.ErrPods) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "credentials") {
			t.Errorf("Start = %v", err)
		}
	})

	p, ch := waitAllowed(t, c.Kubeconfig(serverUser))
	got := waitPod(t, p, before.UID, func(_ kube.Pod, ok bool) bool { return ok })
	want := kube.Pod{UID: string(before.UID), Namespace: "shop", Name: "web-1", Node: "node-a", ServiceAccount: "web-sa",
		Labels: map[string]string{"app": "web"}, Containers: []string{"init", "istio", "web"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pod = %+v, want %+v", got, want)
	}
	if _, ok := p.Pod(string(unbound.UID)); ok {
		t.Error("a pod bound to no node is indexed")
	}

	// After: added, relabelled, deleted, each notified.
	after := mk("web-2", "node-b", nil)
	waitNotified(t, ch, after.UID)
	if got := waitPod(t, p, after.UID, func(_ kube.Pod, ok bool) bool { return ok }); got.Node != "node-b" || got.Labels == nil {
		t.Errorf("new pod = %+v", got)
	}
	patch := []byte(`{"metadata":{"labels":{"app":"api","tier":"b"}}}`)
	if _, err := cs.CoreV1().Pods("shop").Patch(ctx, "web-2", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNotified(t, ch, after.UID)
	waitPod(t, p, after.UID, func(p kube.Pod, ok bool) bool { return ok && p.Labels["app"] == "api" && p.Labels["tier"] == "b" })
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "web-2", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	waitNotified(t, ch, after.UID)
	waitPod(t, p, after.UID, func(_ kube.Pod, ok bool) bool { return !ok })

	// A pod whose binding comes later (the scheduler's Binding
	// subresource) is indexed then.
	if err := cs.CoreV1().Pods("shop").Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: "pending"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-c"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNotified(t, ch, unbound.UID)
	waitPod(t, p, unbound.UID, func(p kube.Pod, ok bool) bool { return ok && p.Node == "node-c" })

	// Huge label sets: kept whole or not at all (Oversize); unicode
	// ServiceAccount names cannot exist (names are DNS labels), label
	// values are ASCII: the API server refuses anything else.
	many := map[string]string{}
	for i := range kube.MaxLabels + 1 {
		many[fmt.Sprintf("l%d", i)] = strings.Repeat("v", 63)
	}
	huge := mk("huge", "node-a", many)
	if got := waitPod(t, p, huge.UID, func(_ kube.Pod, ok bool) bool { return ok }); !got.Oversize || got.Labels != nil || got.Containers != nil {
		t.Errorf("huge pod = %+v", got)
	}
	fits := map[string]string{}
	for i := range kube.MaxLabels {
		fits[fmt.Sprintf("l%d", i)] = "v"
	}
	ok := mk("fits", "node-a", fits)
	if got := waitPod(t, p, ok.UID, func(_ kube.Pod, ok bool) bool { return ok }); got.Oversize || len(got.Labels) != kube.MaxLabels {
		t.Errorf("pod at the bound: oversize %v, %d labels", got.Oversize, len(got.Labels))
	}
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wéb", Labels: map[string]string{"app": "wéb"}},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "web", Image: "x"}}},
	}, metav1.CreateOptions{}); err == nil {
		t.Error("the API server took a unicode pod name")
	}

	// Close stops the watch.
	p.Close()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not stop")
	}
}
