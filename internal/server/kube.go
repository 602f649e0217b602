package server

import (
	"context"
	"log/slog"

	"coffer/internal/broker"
	"coffer/internal/kube"
)

// openPods prepares the index of the pods the cluster's API server has
// bound to nodes, when the server has a kubeconfig (nil otherwise): with
// it, the broker confirms every container a Kubernetes node agent reports
// (docs/kubernetes.md, need to know). It is started by startPods.
func openPods(cfg Config, log *slog.Logger) (*kube.Pods, error) {
	path := cfg.Kubernetes.Kubeconfig
	if path == "" {
		return nil, nil
	}
	rc, err := kube.LoadConfig(path)
	if err != nil {
		return nil, err
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
