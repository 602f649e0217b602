package server

import (
	"context"
	"log/slog"

	"k8s.io/client-go/rest"

	"coffer/internal/broker"
	"coffer/internal/kube"
)

// kubeConfig reads the server's kubeconfig once, for the pod index and the
// node attestation both; nil when none is given.
func kubeConfig(k KubernetesConfig) (*rest.Config, error) {
	if k.Kubeconfig == "" {
		return nil, nil
	}
	return kube.LoadConfig(k.Kubeconfig)
}

// openPods prepares the index of the pods the cluster's API server has
// bound to nodes, when the server has a kubeconfig (rc nil: none, and nil):
// with it, the broker confirms every container a Kubernetes node agent
// reports (docs/kubernetes.md, need to know). It is started by startPods.
func openPods(rc *rest.Config, path string, log *slog.Logger) (*kube.Pods, error) {
	if rc == nil {
		return nil, nil
	}
	return kube.NewPods(rc, path, log)
}

// startPods starts the pod index and tells b of its changes. An API server
// that cannot be reached, or credentials that may not list and watch pods,
// fail the server's start.
func (s *Server) startPods(ctx context.Context, b *broker.Broker) error {
	if s.pods == nil {
		return nil
	}
	s.pods.Subscribe(b.PodChanged)
	return s.pods.Start(ctx)
}

// podVerifier is the pod index as the broker sees it.
type podVerifier struct{ p *kube.Pods }

func (v podVerifier) Pod(uid string) (broker.Pod, bool) {
	p, ok := v.p.Pod(uid)
	return broker.Pod(p), ok
}
