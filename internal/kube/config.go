// Package kube is coffer-server's view of a Kubernetes cluster: the client
// configuration it reads the API server with.
package kube

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// InCluster, given as the kubeconfig, means the configuration of the pod
// the server runs in (its ServiceAccount's token and the cluster's CA).
const InCluster = "in-cluster"

// ErrConfig marks a kubeconfig that cannot be used.
var ErrConfig = errors.New("kubernetes config")

// LoadConfig reads a kubeconfig file, or the in-cluster configuration when
// path is InCluster. The returned configuration has conservative client
// rate limits; callers may raise them.
func LoadConfig(path string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch path {
	case "":
		return nil, fmt.Errorf("%w: no kubeconfig given", ErrConfig)
	case InCluster:
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("%w: in-cluster: %w", ErrConfig, err)
		}
	default:
		if _, serr := os.Stat(path); serr != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, serr)
		}
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
		}
	}
	cfg.UserAgent = "coffer-server"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	return cfg, nil
}
