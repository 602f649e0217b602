// Package attesttest sets up a real API server (internal/kubetest) for
// tests of Kubernetes node attestation: coffer-server's user with the RBAC
// of deploy/kubernetes/coffer-server.yaml, namespace coffer-system with
// the agents' ServiceAccount, nodes, agent pods on them, and tokens minted
// as the kubelet mints them for a projected serviceAccountToken volume.
package attesttest

import (
	"context"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"coffer/internal/kubetest"
)

// ServerUser is the identity coffer-server reads the API server with;
// NoRBACUser one with no role at all.
const (
	ServerUser = "coffer-server"
	NoRBACUser = "coffer-norbac"
)

// Namespace and ServiceAccount of the agents' DaemonSet.
const (
	Namespace      = "coffer-system"
	ServiceAccount = "coffer-agent"
)

// Cluster is a real API server ready for attestation.
type Cluster struct {
	*kubetest.Cluster
	t     testing.TB
	Admin *kubernetes.Clientset
}

// Start starts the API server and creates the server's RBAC (create on
// tokenreviews, get/list/watch on pods), namespace coffer-system with
// ServiceAccounts coffer-agent and other, and waits until the server's
// user may create tokenreviews.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{Users: []kubetest.User{{Name: ServerUser}, {Name: NoRBACUser}}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := c.Client()
	c.EnsureNamespace(ctx, Namespace)
	c.EnsureServiceAccount(ctx, Namespace, ServiceAccount)
	c.EnsureServiceAccount(ctx, Namespace, "other")
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
	ac := &Cluster{Cluster: c, t: t, Admin: admin}
	ac.waitRBAC(ctx)
	return ac
}

// waitRBAC waits until RBAC's authorizer (which learns of bindings through
// its own informer) lets the server's user create tokenreviews.
func (c *Cluster) waitRBAC(ctx context.Context) {
	cs, err := kubernetes.NewForConfig(c.Config(ServerUser))
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: "x"}}, metav1.CreateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			c.t.Fatalf("attesttest: the server's user cannot create tokenreviews: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Node creates a Node object.
func (c *Cluster) Node(name string) {
	c.t.Helper()
	_, err := c.Admin.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatal(err)
	}
}

// Pod creates a pod in coffer-system on node running as ServiceAccount sa.
func (c *Cluster) Pod(name, node, sa string) *corev1.Pod {
	c.t.Helper()
	p, err := c.Admin.CoreV1().Pods(Namespace).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "agent", Image: "coffer/coffer-agent:dev"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// DeletePod deletes a pod at once (no kubelet confirms a graceful one).
func (c *Cluster) DeletePod(name string) {
	c.t.Helper()
	if err := c.Admin.CoreV1().Pods(Namespace).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		c.t.Fatal(err)
	}
}

// Token mints a token of ServiceAccount sa in coffer-system as the kubelet
// does for a projected volume: bound to pod (if not nil), for audience,
// valid for ttl (at least 10 minutes).
func (c *Cluster) Token(sa string, pod *corev1.Pod, audience string, ttl time.Duration) string {
	c.t.Helper()
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(ttl.Seconds()))}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: types.UID(pod.UID)}
	}
	tr, err := c.Admin.CoreV1().ServiceAccounts(Namespace).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return tr.Status.Token
}
