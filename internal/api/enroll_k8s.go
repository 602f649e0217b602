package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"coffer/internal/audit"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/kube"
	"coffer/internal/policy"
)

// NodeLabel is the host label of an agent enrolled by Kubernetes node
// attestation: its node's name, set by the server, never by the agent.
const NodeLabel = "k8s.node"

// Attestor proves which Kubernetes node a projected ServiceAccount token's
// pod runs on (kube.Attestor).
type Attestor interface {
	Attest(ctx context.Context, token string) (kube.Attestation, error)
	// Alive reports whether a pod of that uid still exists and runs.
	Alive(ctx context.Context, namespace, pod, uid string) (bool, error)
}

// NodeAttestation enrolls agents of Kubernetes nodes by the ServiceAccount
// token the kubelet projects into their pods, instead of a join token.
type NodeAttestation struct {
	Attestor Attestor
	// Labels and Scope are what every agent enrolled so gets, besides
	// NodeLabel; NamePrefix goes before the node's name to make the
	// agent's name.
	Labels     map[string]string
	Scope      string
	NamePrefix string
	// NoReenroll refuses (409) the attestation of a node whose agent is
	// enrolled already; by default it replaces that agent (the node was
	// reimaged), revoking its certificates.
	NoReenroll bool
}

var (
	errNotReplaceable = errors.New("not replaceable")
	errTokenReused    = errors.New("token already used")
)

// enrollAttested is POST /v1/enroll with a k8s_token: the agent's node is
// proven by the API server, its name derived from the node, and its host
// label k8s.node set to the node. Nothing is enrolled unless every check
// passes; every answer is audited.
func (s *Server) enrollAttested(w http.ResponseWriter, hr *http.Request, req EnrollRequest, src string) {
	ctx := hr.Context()
	ev := audit.Event{Actor: "anonymous", Action: "agent.enroll", Source: src, Details: map[string]string{"method": "k8s"}}
	refuse := func(code int, result, msg string) {
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			s.throttle.fail(src)
		}
		ev.Result = result
		ev.Details["reason"] = msg
		if aerr := s.record(ctx, ev); aerr != nil {
			writeError(w, http.StatusInternalServerError, "audit trail unavailable")
			return
		}
		writeError(w, code, msg)
	}
	na := s.cfg.Attest
	switch {
	case na == nil:
		refuse(http.StatusForbidden, audit.ResultDenied, "enroll: k8s_token: this server does not enroll agents by Kubernetes attestation "+
			"(set kubernetes.agent_service_accounts and kubernetes.kubeconfig); use a join token")
		return
	case req.JoinToken != "":
		writeError(w, http.StatusBadRequest, "enroll: give join_token or k8s_token, not both")
		return
	}
	if req.Name != "" {
		if err := identity.ValidateAgentName(req.Name); err != nil {
			writeError(w, http.StatusBadRequest, "enroll: name: "+err.Error())
			return
		}
	}
	if err := identity.CheckAgentCSR(req.CSR); err != nil {
		writeError(w, http.StatusBadRequest, "enroll: csr: "+err.Error())
		return
	}
	att, err := na.Attestor.Attest(ctx, req.K8sToken)
	switch {
	case errors.Is(err, kube.ErrUnauthenticated):
		refuse(http.StatusUnauthorized, "unauthenticated", "enroll: k8s_token: "+err.Error())
		return
	case errors.Is(err, kube.ErrDenied):
		refuse(http.StatusForbidden, audit.ResultDenied, "enroll: k8s_token: "+err.Error())
		return
	case errors.Is(err, kube.ErrUnavailable):
		s.unavailable(w, hr.Context(), ev, "the token", err)
		return
	case err != nil:
		s.log.Error("enroll: attestation failed", "err", err)
		refuse(http.StatusInternalServerError, audit.ResultError, "enroll failed: server error")
		return
	}
	ev.Actor = "k8s:" + att.Namespace + "/" + att.ServiceAccount
	ev.Details["node"] = att.Node
	ev.Details["pod"] = att.Namespace + "/" + att.Pod
	ev.Details["pod_uid"] = att.PodUID
	if att.CredentialID != "" {
		ev.Details["credential_id"] = att.CredentialID
	}
	name := na.NamePrefix + att.Node
	ev.Object = "agent:" + name
	if err := identity.ValidateAgentName(name); err != nil {
		refuse(http.StatusForbidden, audit.ResultDenied, fmt.Sprintf("enroll: node %q gives no valid agent name: %v", att.Node, err))
		return
	}
	if req.Name != "" && req.Name != name {
		refuse(http.StatusForbidden, audit.ResultDenied, fmt.Sprintf("enroll: the token proves node %q, whose agent is named %q, not %q: "+
			"start coffer-agent without --name (or with --name %s)", att.Node, name, req.Name, name))
		return
	}
	labels := maps.Clone(na.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[NodeLabel] = att.Node
	attested := &fleet.Attested{Node: att.Node, Pod: att.Namespace + "/" + att.Pod, PodUID: att.PodUID,
		ServiceAccount: att.Namespace + "/" + att.ServiceAccount, CredentialID: att.CredentialID}
	// A re-enrollment from another pod replaces the node's agent only if
	// the pod that enrolled it is gone: two live agent pods claiming one
	// node (a pod made with the agents' ServiceAccount and spec.nodeName
	// beside the DaemonSet's) are refused. The API server is asked before
	// the fleet is locked; the record is then checked unchanged.
	var checkedUID string
	if old, ok := s.cfg.Fleet.Get(name); ok && old.Attested != nil && old.Attested.Node == att.Node && old.Attested.PodUID != att.PodUID {
		ns, pod, _ := strings.Cut(old.Attested.Pod, "/")
		alive, err := na.Attestor.Alive(ctx, ns, pod, old.Attested.PodUID)
		switch {
		case err != nil:
			s.unavailable(w, hr.Context(), ev, "the node's previous agent pod", err)
			return
		case alive:
			ev.Details["replaced_pod_uid"] = old.Attested.PodUID
			refuse(http.StatusConflict, "conflict", fmt.Sprintf("enroll: agent %q of node %q was enrolled by pod %s (uid %s), which still runs: "+
				"one node, one agent pod; delete the other pod, or remove the agent with `coffer agent rm %s`", name, att.Node, old.Attested.Pod, old.Attested.PodUID, name))
			return
		}
		checkedUID = old.Attested.PodUID
	}
	mayReplace := func(old fleet.Agent) error {
		switch {
		case old.Attested == nil:
			return fmt.Errorf("%w: agent %q was enrolled with a join token, not by attestation; remove it first with `coffer agent rm %s`", errNotReplaceable, name, name)
		case old.Attested.Node != att.Node:
			return fmt.Errorf("%w: agent %q was attested for node %q; remove it first with `coffer agent rm %s`", errNotReplaceable, name, old.Attested.Node, name)
		case att.CredentialID != "" && old.Attested.CredentialID == att.CredentialID:
			return fmt.Errorf("%w: this token already enrolled agent %q; a re-enrollment needs a fresh token", errTokenReused, name)
		case old.Attested.PodUID != att.PodUID && old.Attested.PodUID != checkedUID:
			return fmt.Errorf("%w: agent %q was enrolled again meanwhile; retry", errNotReplaceable, name)
		case na.NoReenroll:
			return fmt.Errorf("%w: agent %q of node %q is enrolled and re-enrollment is off (kubernetes.agent_reenroll: false); remove it first with `coffer agent rm %s`",
				errNotReplaceable, name, att.Node, name)
		}
		return nil
	}
	admit := func(context.Context) (fleet.Admission, error) {
		return fleet.Admission{Labels: labels, Scope: na.Scope, Attested: attested}, nil
	}
	der, replaced, err := s.cfg.Fleet.EnrollReplacing(ctx, name, req.CSR, src, admit, mayReplace)
	code, msg := http.StatusOK, ""
	switch {
	case err == nil:
		ev.Result = audit.ResultOK
		ev.Details["labels"] = policy.FormatLabels(labels)
		if na.Scope != "" {
			ev.Details["scope"] = na.Scope
		}
		if replaced != nil {
			// The node was reimaged (or its agent lost its state): every
			// certificate of the previous enrollment is revoked.
			ev.Details["reenrolled"] = "true"
			ev.Details["replaced_enrolled"] = replaced.Enrolled.Format(time.RFC3339Nano)
			if replaced.Attested != nil {
				ev.Details["replaced_pod_uid"] = replaced.Attested.PodUID
			}
			if s.cfg.Broker != nil {
				s.cfg.Broker.Disconnect(name)
			}
		}
	case errors.Is(err, errTokenReused):
		s.throttle.fail(src)
		ev.Result = "unauthenticated"
		code, msg = http.StatusUnauthorized, "enroll: "+err.Error()
	case errors.Is(err, errNotReplaceable), errors.Is(err, fleet.ErrExists), errors.Is(err, fleet.ErrUnknownAgent):
		ev.Result = "conflict"
		code, msg = http.StatusConflict, "enroll: "+err.Error()
	case errors.Is(err, identity.ErrBadCSR), errors.Is(err, identity.ErrInvalidAgentName), errors.Is(err, policy.ErrInvalid):
		ev.Result = audit.ResultInvalid
		code, msg = http.StatusBadRequest, "enroll: "+err.Error()
	default:
		ev.Result = audit.ResultError
		code, msg = http.StatusInternalServerError, "enroll failed: server error"
		s.log.Error("enroll failed", "agent", name, "err", err)
	}
	if code != http.StatusOK {
		ev.Details["reason"] = msg
	}
	if aerr := s.record(ctx, ev); aerr != nil {
		writeError(w, http.StatusInternalServerError, "audit trail unavailable")
		return
	}
	if code != http.StatusOK {
		writeError(w, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, EnrollResponse{Certificate: der, CAPEM: string(s.cfg.CAPEM), Name: name})
}

// unavailable answers 503 when the API server could not be asked about
// what: the cause (addresses, the API server's words) goes to the log and
// the audit record; the caller, not authenticated, learns only whether to
// wait or to fix the server's RBAC.
func (s *Server) unavailable(w http.ResponseWriter, ctx context.Context, ev audit.Event, what string, err error) {
	s.log.Warn("enroll: cannot ask the Kubernetes API server", "about", what, "err", err)
	msg := "enroll: cannot check " + what + " with the Kubernetes API server now; retry later"
	if errors.Is(err, kube.ErrRBAC) {
		msg = "enroll: cannot check " + what + ": " + kube.ErrRBAC.Error() + " (see deploy/kubernetes/coffer-server.yaml)"
	}
	ev.Result = "unavailable"
	ev.Details["reason"] = err.Error()
	if aerr := s.record(ctx, ev); aerr != nil {
		writeError(w, http.StatusInternalServerError, "audit trail unavailable")
		return
	}
	writeError(w, http.StatusServiceUnavailable, msg)
}
