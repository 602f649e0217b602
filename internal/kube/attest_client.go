package kube

import (
	"context"
	"fmt"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiTimeout bounds each question to the API server during an enrollment.
const apiTimeout = 10 * time.Second

// Cluster answers Reviewer and PodGetter from a real API server. Its identity
// needs create on tokenreviews (authentication.k8s.io) and get on pods.
type Cluster struct {
	cs kubernetes.Interface
}

var (
	_ Reviewer  = (*Cluster)(nil)
	_ PodGetter = (*Cluster)(nil)
)

// NewCluster makes a client of the API server that cfg reaches.
func NewCluster(cfg *rest.Config) (*Cluster, error) {
	c := rest.CopyConfig(cfg)
	if c.Timeout == 0 {
		c.Timeout = apiTimeout
	}
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &Cluster{cs: cs}, nil
}

// Review implements Reviewer with a TokenReview.
func (c *Cluster) Review(ctx context.Context, token string, audiences []string) (Review, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	tr, err := c.cs.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return Review{}, fmt.Errorf("%w: %s", ErrRBAC, apiReason(err))
		}
		return Review{}, fmt.Errorf("%s", apiReason(err))
	}
	st := tr.Status
	r := Review{Authenticated: st.Authenticated, Error: st.Error, User: st.User.Username, Audiences: st.Audiences}
	if len(st.User.Extra) > 0 {
		r.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			r.Extra[k] = []string(v)
		}
	}
	return r, nil
}

// Pod implements PodGetter.
func (c *Cluster) Pod(ctx context.Context, namespace, name string) (AgentPod, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	p, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return AgentPod{}, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrPodNotFound)
	case apierrors.IsForbidden(err):
		return AgentPod{}, fmt.Errorf("%w: %s", ErrRBAC, apiReason(err))
	case err != nil:
		return AgentPod{}, fmt.Errorf("%s", apiReason(err))
	}
	return AgentPod{
		UID: string(p.UID), Node: p.Spec.NodeName, ServiceAccount: p.Spec.ServiceAccountName,
		Terminating: p.DeletionTimestamp != nil, Phase: string(p.Status.Phase),
	}, nil
}

// apiReason is an API error's message, short (a client error quotes no
// token: TokenReview's is in the request body, never in the URL).
func apiReason(err error) string { return clip(err.Error()) }
