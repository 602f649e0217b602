package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKubernetesAttestationConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(p, []byte(`kubernetes:
  kubeconfig: in-cluster
  agent_service_accounts: [coffer-system/coffer-agent]
  agent_labels: {cluster: prod}
  agent_scope: "shop/*"
  agent_token_max_ttl: 30m
  agent_reenroll: false
`), 0o600)
	c := Defaults()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	k := c.Kubernetes
	if len(k.AgentServiceAccounts) != 1 || k.AgentLabels["cluster"] != "prod" || k.AgentTokenMaxTTL != 30*time.Minute || k.AgentReenroll == nil || *k.AgentReenroll {
		t.Fatalf("kubernetes = %+v", k)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mut   func(*KubernetesConfig)
		inMsg string
	}{
		{func(k *KubernetesConfig) { k.Kubeconfig = "" }, "needs kubeconfig"},
		{func(k *KubernetesConfig) { k.AgentServiceAccounts = []string{"coffer-agent"} }, "NAMESPACE/NAME"},
		{func(k *KubernetesConfig) { k.AgentLabels = map[string]string{"k8s.node": "x"} }, "set by the server"},
		{func(k *KubernetesConfig) { k.AgentLabels = map[string]string{"bad key!": "x"} }, "agent_labels"},
		{func(k *KubernetesConfig) { k.AgentNamePrefix = "K8S_" }, "agent_name_prefix"},
		{func(k *KubernetesConfig) { k.AgentTokenMaxTTL = time.Minute }, "10m to 24h"},
		{func(k *KubernetesConfig) { k.AgentServiceAccounts = nil }, "agent_service_accounts is empty"},
	} {
		c := Defaults()
		c.LoadFile(p)
		tt.mut(&c.Kubernetes)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.inMsg) || !strings.HasPrefix(err.Error(), "config: kubernetes: ") {
			t.Errorf("Validate = %v; want it naming %s", err, tt.inMsg)
		}
	}
	// Off by default, and a kubeconfig alone does not turn it on.
	c = Defaults()
	c.Kubernetes.Kubeconfig = "in-cluster"
	if err := c.Validate(); err != nil || c.Kubernetes.attesting() {
		t.Fatalf("kubeconfig alone: %v", err)
	}
}
