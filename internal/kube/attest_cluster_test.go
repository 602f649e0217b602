package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"coffer/internal/kube"
	"coffer/internal/kube/attesttest"
	"coffer/internal/kubetest"
)

// TestAttestAgainstTheAPIServer: a token the kubelet would project into the
// agent's pod on node-a attests node-a; every other token is refused with
// what is wrong; an API server that is gone is ErrUnavailable.
func TestAttestAgainstTheAPIServer(t *testing.T) {
	c := attesttest.Start(t)
	c.Node("node-a")
	pod := c.Pod("coffer-agent-a", "node-a", attesttest.ServiceAccount)
	cl, err := kube.NewCluster(c.Config(attesttest.ServerUser))
	if err != nil {
		t.Fatal(err)
	}
	a, err := kube.NewAttestor(kube.AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"}, Reviewer: cl, Pods: cl})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(sa string, p any, aud string) string {
		if p == nil {
			return c.Token(sa, nil, aud, 10*time.Minute)
		}
		return c.Token(sa, pod, aud, 10*time.Minute)
	}
	at, err := a.Attest(context.Background(), tok("coffer-agent", pod, "coffer"))
	if err != nil {
		t.Fatalf("the agent pod's token: %v", err)
	}
	if at.Node != "node-a" || at.Namespace != "coffer-system" || at.Pod != "coffer-agent-a" || at.PodUID != string(pod.UID) || at.ServiceAccount != "coffer-agent" {
		t.Fatalf("attestation = %+v", at)
	}
	if !strings.HasPrefix(at.CredentialID, "JTI=") || time.Until(at.Expires) > 11*time.Minute || time.Until(at.Expires) < time.Minute {
		t.Fatalf("credential id %q, expires %s", at.CredentialID, at.Expires)
	}

	otherPod := c.Pod("other-a", "node-a", "other")
	gonePod := c.Pod("coffer-agent-gone", "node-a", attesttest.ServiceAccount)
	gone := c.Token("coffer-agent", gonePod, "coffer", 10*time.Minute)
	c.DeletePod(gonePod.Name)
	for _, tt := range []struct {
		desc, token string
		want        error
		inMsg       string
	}{
		{"wrong audience", tok("coffer-agent", pod, "vault"), kube.ErrUnauthenticated, `token audiences ["vault"] is invalid for the target audiences ["coffer"]`},
		{"the API server's audience", tok("coffer-agent", pod, kubetest.Issuer), kube.ErrUnauthenticated, `audience "coffer"`},
		{"another ServiceAccount", c.Token("other", otherPod, "coffer", 10*time.Minute), kube.ErrDenied, "coffer-system/other is not allowed"},
		{"pod deleted", gone, kube.ErrUnauthenticated, "invalidated"},
		{"not bound to a pod", tok("coffer-agent", nil, "coffer"), kube.ErrDenied, "not bound to a pod"},
		{"lives too long", c.Token("coffer-agent", pod, "coffer", 2*time.Hour), kube.ErrDenied, "expirationSeconds of at most 3600"},
		{"garbage", "not-a-token", kube.ErrUnauthenticated, "not a JWT"},
		{"garbage JWT", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln", kube.ErrUnauthenticated, "invalid bearer token"},
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
		})
	}

	// Without its RBAC, coffer-server says so (503-class, not the token's fault).
	nc, err := kube.NewCluster(c.Config(attesttest.NoRBACUser))
	if err != nil {
		t.Fatal(err)
	}
	na, err := kube.NewAttestor(kube.AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"}, Reviewer: nc, Pods: nc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := na.Attest(context.Background(), tok("coffer-agent", pod, "coffer")); !errors.Is(err, kube.ErrUnavailable) || !errors.Is(err, kube.ErrRBAC) {
		t.Fatalf("no RBAC: %v", err)
	}
	if _, err := na.Alive(context.Background(), "coffer-system", pod.Name, string(pod.UID)); !errors.Is(err, kube.ErrRBAC) {
		t.Fatalf("no RBAC, pod lookup: %v", err)
	}

	late := tok("coffer-agent", pod, "coffer")
	c.Stop()
	if _, err := a.Attest(context.Background(), late); !errors.Is(err, kube.ErrUnavailable) {
		t.Fatalf("API server stopped: %v", err)
	}
}
