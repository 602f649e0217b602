package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"coffer/internal/audit"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/policy"
)

// EnrollRequest is the body of POST /v1/enroll: a one-time join token, the
// agent's name and a PKCS#10 certificate request (DER, base64 in JSON). An
// agent on a Kubernetes node gives instead of the join token the
// ServiceAccount token projected into its pod (K8sToken); its name then
// comes from its node (see enrollAttested).
type EnrollRequest struct {
	JoinToken string `json:"join_token,omitempty"`
	K8sToken  string `json:"k8s_token,omitempty"`
	Name      string `json:"name"`
	CSR       []byte `json:"csr"`
}

// EnrollResponse carries the agent's certificate (DER), the CA (PEM) and
// the agent's name.
type EnrollResponse struct {
	Certificate []byte `json:"certificate"`
	CAPEM       string `json:"ca_pem"`
	Name        string `json:"name,omitempty"`
}

// enroll turns a join token and a CSR into an agent certificate. What can
// be checked without spending the one-time token is checked first (name,
// CSR, the token itself, a name already enrolled); the token is then
// consumed whatever happens next, so it cannot be replayed. The agent gets
// the token's labels and scope.
func (s *Server) enroll(w http.ResponseWriter, hr *http.Request) {
	src := sourceOf(hr)
	if wait := s.throttle.blocked(src); wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts; retry later")
		return
	}
	if s.cfg.Incident != nil && s.cfg.Incident.Current() != nil {
		s.record(hr.Context(), audit.Event{Actor: "anonymous", Action: "agent.enroll", Result: audit.ResultDenied, Source: src,
			Details: map[string]string{"reason": "lockdown"}})
		writeError(w, http.StatusForbidden, "a lockdown is in force: no agent may enroll until it is lifted (coffer incident status)")
		return
	}
	var req EnrollRequest
	if err := decode(hr, smallBody, &req); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	if req.K8sToken != "" {
		s.enrollAttested(w, hr, req, src)
		return
	}
	if err := identity.ValidateAgentName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "enroll: name: "+err.Error())
		return
	}
	if err := identity.CheckAgentCSR(req.CSR); err != nil {
		writeError(w, http.StatusBadRequest, "enroll: csr: "+err.Error())
		return
	}
	ev := audit.Event{Actor: "anonymous", Action: "agent.enroll", Object: "agent:" + req.Name, Source: src}
	unauthenticated := func() {
		s.throttle.fail(src)
		ev.Result = "unauthenticated"
		s.record(hr.Context(), ev)
		writeError(w, http.StatusUnauthorized, "invalid, expired or already used join token")
	}
	// A bad token learns nothing, not even whether the name is taken.
	tok, err := s.cfg.Tokens.CheckJoin(req.JoinToken)
	if err != nil {
		unauthenticated()
		return
	}
	ev.Actor = "token:" + tok.ID
	var admitErr error
	admit := func(ctx context.Context) (fleet.Admission, error) {
		t, err := s.cfg.Tokens.ConsumeJoin(ctx, req.JoinToken)
		if err != nil {
			admitErr = err
			return fleet.Admission{}, err
		}
		tok = t
		return fleet.Admission{Labels: t.AgentLabels, Scope: t.Scope}, nil
	}
	der, err := s.cfg.Fleet.Enroll(hr.Context(), req.Name, req.CSR, src, admit)
	if admitErr != nil {
		// Spent or revoked since CheckJoin.
		ev.Actor = "anonymous"
		unauthenticated()
		return
	}
	code, msg := http.StatusOK, ""
	switch {
	case err == nil:
		ev.Result = "ok"
		if len(tok.AgentLabels) > 0 {
			ev.Details = map[string]string{"labels": policy.FormatLabels(tok.AgentLabels)}
		}
		if tok.Scope != "" {
			if ev.Details == nil {
				ev.Details = map[string]string{}
			}
			ev.Details["scope"] = tok.Scope
		}
	case errors.Is(err, fleet.ErrExists):
		ev.Result = "conflict"
		code = http.StatusConflict
		msg = fmt.Sprintf("enroll: an agent named %q is already enrolled; remove it first with `coffer agent rm %s`, "+
			"or enroll this host under another name (coffer-agent --name); the join token was not used", req.Name, req.Name)
	case errors.Is(err, identity.ErrBadCSR), errors.Is(err, identity.ErrInvalidAgentName), errors.Is(err, policy.ErrInvalid):
		ev.Result = "invalid"
		code, msg = http.StatusBadRequest, "enroll: "+err.Error()
	default:
		ev.Result = "error"
		code, msg = http.StatusInternalServerError, "enroll failed: server error"
		s.log.Error("enroll failed", "agent", req.Name, "err", err)
	}
	if aerr := s.record(hr.Context(), ev); aerr != nil {
		writeError(w, http.StatusInternalServerError, "audit trail unavailable")
		return
	}
	if code != http.StatusOK {
		writeError(w, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, EnrollResponse{Certificate: der, CAPEM: string(s.cfg.CAPEM), Name: req.Name})
}
