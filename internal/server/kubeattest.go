package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"coffer/internal/api"
	"coffer/internal/authz"
	"coffer/internal/identity"
	"coffer/internal/kube"
	"coffer/internal/policy"

	"k8s.io/client-go/rest"
)

// attesting reports whether node attestation is configured.
func (k KubernetesConfig) attesting() bool { return len(k.AgentServiceAccounts) > 0 }

// validateAttestation checks the attestation settings (none set: off).
func (k KubernetesConfig) validateAttestation() error {
	if !k.attesting() {
		if k.AgentAudience != "" || len(k.AgentLabels) > 0 || k.AgentScope != "" || k.AgentNamePrefix != "" || k.AgentTokenMaxTTL != 0 || k.AgentReenroll != nil {
			return errors.New("agent_* options are set but agent_service_accounts is empty: name the ServiceAccount(s) of the agents' DaemonSet (--k8s-agent-service-accounts coffer-system/coffer-agent)")
		}
		return nil
	}
	if k.Kubeconfig == "" {
		return errors.New("agent_service_accounts needs kubeconfig (--kubeconfig FILE or in-cluster): the server asks the API server about agents' tokens")
	}
	for _, sa := range k.AgentServiceAccounts {
		if _, _, err := kube.ParseServiceAccount(sa); err != nil {
			return fmt.Errorf("agent_service_accounts: %w", err)
		}
	}
	if err := policy.ValidateLabels(k.AgentLabels); err != nil {
		return fmt.Errorf("agent_labels: %w", err)
	}
	if _, ok := k.AgentLabels[api.NodeLabel]; ok {
		return fmt.Errorf("agent_labels: %s is set by the server to each agent's node", api.NodeLabel)
	}
	if k.AgentNamePrefix != "" {
		if err := identity.ValidateAgentName(k.AgentNamePrefix + "node"); err != nil {
			return fmt.Errorf("agent_name_prefix %q: %w", k.AgentNamePrefix, err)
		}
	}
	if k.AgentAudience != "" && strings.TrimSpace(k.AgentAudience) != k.AgentAudience {
		return fmt.Errorf("agent_audience %q: no spaces around it", k.AgentAudience)
	}
	// A TokenRequest lasts at least 10 minutes.
	if k.AgentTokenMaxTTL != 0 && (k.AgentTokenMaxTTL < 10*time.Minute || k.AgentTokenMaxTTL > 24*time.Hour) {
		return fmt.Errorf("agent_token_max_ttl %s: must be 10m to 24h", k.AgentTokenMaxTTL)
	}
	return nil
}

// nodeAttestation builds the enrollment's node attestation from k and the
// loaded kubeconfig rc; nil when it is off.
func nodeAttestation(k KubernetesConfig, rc *rest.Config, log *slog.Logger) (*api.NodeAttestation, error) {
	if !k.attesting() {
		return nil, nil
	}
	if rc == nil {
		return nil, fmt.Errorf("%w: node attestation needs a kubeconfig", kube.ErrConfig)
	}
	cl, err := kube.NewCluster(rc)
	if err != nil {
		return nil, err
	}
	at, err := kube.NewAttestor(kube.AttestConfig{
		ServiceAccounts: k.AgentServiceAccounts, Audience: k.AgentAudience, MaxTokenTTL: k.AgentTokenMaxTTL,
		Reviewer: cl, Pods: cl,
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	log.Info("agents of Kubernetes nodes enroll by attestation", "service_accounts", strings.Join(k.AgentServiceAccounts, ","), "audience", at.Audience())
	return &api.NodeAttestation{
		Attestor: at, Labels: k.AgentLabels, Scope: authz.NormalizeScope(k.AgentScope), NamePrefix: k.AgentNamePrefix,
		NoReenroll: k.AgentReenroll != nil && !*k.AgentReenroll,
	}, nil
}
