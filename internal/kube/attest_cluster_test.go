package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"coffer/internal/kube"
	"coffer/internal/kubetest"
)

// ServerUser is the identity coffer-server reads the API server with in
// these tests, with the RBAC of deploy/kubernetes/coffer-server.yaml.
const ServerUser = "coffer-server"

// AttestCluster is a real API server with what node attestation needs: the
// server's user allowed to create tokenreviews and get pods, namespace
// coffer-system with ServiceAccounts coffer-agent and other, node-a, and
// an agent pod on node-a.
type AttestCluster struct {
	*kubetest.Cluster
	Admin *kubernetes.Clientset
	Pod   *corev1.Pod // coffer-system/coffer-agent-a on node-a
}

func startAttestCluster(t *testing.T) *AttestCluster {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: ServerUser}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := c.Client()
	c.EnsureNamespace(ctx, "coffer-system")
	c.EnsureServiceAccount(ctx, "coffer-system", "coffer-agent")
	c.EnsureServiceAccount(ctx, "coffer-system", "other")
	_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "coffer-server"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "coffer-server"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "coffer-server"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: ServerUser}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ac := &AttestCluster{Cluster: c, Admin: admin}
	ac.Pod = ac.agentPod(t, "coffer-agent-a", "node-a", "coffer-agent")
	return ac
}

// agentPod creates a pod in coffer-system on node running as sa.
func (c *AttestCluster) agentPod(t *testing.T, name, node, sa string) *corev1.Pod {
	t.Helper()
	p, err := c.Admin.CoreV1().Pods("coffer-system").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "agent", Image: "coffer/coffer-agent:dev"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// token mints a token of ServiceAccount sa as the kubelet does for a
// projected volume: bound to pod (if not nil), for audience, 10 minutes.
func (c *AttestCluster) token(t *testing.T, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(600))}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: types.UID(pod.UID)}
	}
	tr, err := c.Admin.CoreV1().ServiceAccounts("coffer-system").CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func (c *AttestCluster) attestor(t *testing.T) *kube.Attestor {
	t.Helper()
	cl, err := kube.NewCluster(c.Config(ServerUser))
	if err != nil {
		t.Fatal(err)
	}
	a, err := kube.NewAttestor(kube.AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"}, Reviewer: cl, Pods: cl})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// attestWithRetry attests; RBAC's authorizer learns of the new binding
// through its own informer, so the first attempts may be refused for it.
func attestWithRetry(t *testing.T, a *kube.Attestor, tok string) (kube.Attestation, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		at, err := a.Attest(context.Background(), tok)
		if !errors.Is(err, kube.ErrUnavailable) || !strings.Contains(err.Error(), "RBAC") || time.Now().After(deadline) {
			return at, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAttestAgainstTheAPIServer: a token the kubelet would project into the
// agent's pod on node-a attests node-a; every other token is refused with
// what is wrong.
func TestAttestAgainstTheAPIServer(t *testing.T) {
	c := startAttestCluster(t)
	a := c.attestor(t)
	at, err := attestWithRetry(t, a, c.token(t, "coffer-agent", c.Pod, "coffer"))
	if err != nil {
		t.Fatalf("the agent pod's token: %v", err)
	}
	if at.Node != "node-a" || at.Namespace != "coffer-system" || at.Pod != "coffer-agent-a" || at.PodUID != string(c.Pod.UID) || at.ServiceAccount != "coffer-agent" {
		t.Fatalf("attestation = %+v", at)
	}
	if at.CredentialID == "" || time.Until(at.Expires) > 11*time.Minute || time.Until(at.Expires) < time.Minute {
		t.Fatalf("credential id %q, expires %s", at.CredentialID, at.Expires)
	}
	t.Logf("attestation: %+v", at)

	otherPod := c.agentPod(t, "other-a", "node-a", "other")
	gonePod := c.agentPod(t, "coffer-agent-gone", "node-a", "coffer-agent")
	gone := c.token(t, "coffer-agent", gonePod, "coffer")
	zero := int64(0)
	if err := c.Admin.CoreV1().Pods("coffer-system").Delete(context.Background(), gonePod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	apiToken := c.token(t, "coffer-agent", c.Pod, kubetest.Issuer) // the API server's own audience
	for _, tt := range []struct {
		desc, token string
		want        error
		inMsg       string
	}{
		{"wrong audience", c.token(t, "coffer-agent", c.Pod, "vault"), kube.ErrUnauthenticated, `audience "coffer"`},
		{"the API server's audience", apiToken, kube.ErrUnauthenticated, `audience "coffer"`},
		{"another ServiceAccount", c.token(t, "other", otherPod, "coffer"), kube.ErrDenied, "coffer-system/other is not allowed"},
		{"pod deleted", gone, kube.ErrUnauthenticated, "invalidated"},
		{"not bound to a pod", c.token(t, "coffer-agent", nil, "coffer"), kube.ErrDenied, "not bound to a pod"},
		{"garbage", "not-a-token", kube.ErrUnauthenticated, "not a JWT"},
		{"garbage JWT", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln", kube.ErrUnauthenticated, "API server"},
		{"empty", "", kube.ErrUnauthenticated, "empty"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := a.Attest(context.Background(), tt.token)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("err = %v; want %v naming %q", err, tt.want, tt.inMsg)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatalf("the error quotes the token: %v", err)
			}
			t.Logf("%v", err)
		})
	}

	// The API server gone: 503-class, not a refusal of the token.
	late := c.token(t, "coffer-agent", c.Pod, "coffer")
	c.Stop()
	if _, err := a.Attest(context.Background(), late); !errors.Is(err, kube.ErrUnavailable) {
		t.Fatalf("API server stopped: %v", err)
	}
}
