package kubetest_test

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"coffer/internal/containerdtest"
	"coffer/internal/kubetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	containerdtest.StopShared()
	os.Exit(code)
}

// TestKubelet starts a real kubelet on a private containerd 2.2.9, runs a
// pod created with nodeName (not on the host's network, with its
// kubelet-minted ServiceAccount token) to completion, and checks that
// stopping the kubelet leaves no mount and nothing of it on the host.
func TestKubelet(t *testing.T) {
	if testing.Short() {
		t.Skip("real kubelet")
	}
	d := containerdtest.Shared(t, containerdtest.V2)
	node := kubetest.NodeName(t)
	c := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{kubetest.NodeUser(node)}})
	k := c.StartKubelet(t, kubetest.KubeletOptions{Node: node, Containerd: d})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.EnsureNamespace(ctx, "shop")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job-1", Labels: map[string]string{"app": "job"}},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "app", Image: containerdtest.AppImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo TOKEN; echo DONE"},
			}},
		},
	}
	created, err := c.Client().CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := c.Client().CoreV1().Pods("shop").Get(context.Background(), "job-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == corev1.PodSucceeded {
			break
		}
		if p.Status.Phase == corev1.PodFailed || ctx.Err() != nil {
			t.Fatalf("pod %s: %+v\n%s", p.Status.Phase, p.Status, k.Tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := k.PodLog("shop", "job-1", string(created.UID), "app", 0); out != "TOKEN\nDONE\n" {
		t.Errorf("pod log %q", out)
	}

	k.Stop()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), k.RootDir) {
			t.Errorf("left mounted: %s", sc.Text())
		}
	}
	if ents, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range ents {
			if dst, _ := os.Readlink("/var/log/containers/" + e.Name()); strings.HasPrefix(dst, k.PodLogsDir) {
				t.Errorf("left behind: /var/log/containers/%s", e.Name())
			}
		}
	}
}
