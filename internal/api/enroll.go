package api

import (
	"crypto/x509"
	"fmt"
	"net/http"

	"coffer/internal/audit"
	"coffer/internal/identity"
)

// EnrollRequest is the body of POST /v1/enroll: a one-time join token, the
// agent's name and a PKCS#10 certificate request (DER, base64 in JSON).
type EnrollRequest struct {
	JoinToken string `json:"join_token"`
	Name      string `json:"name"`
	CSR       []byte `json:"csr"`
}

// EnrollResponse carries the agent's certificate (DER) and the CA (PEM).
type EnrollResponse struct {
	Certificate []byte `json:"certificate"`
	CAPEM       string `json:"ca_pem"`
}

// enroll turns a join token and a CSR into an agent certificate. The token
// is consumed whatever happens next, so it cannot be replayed.
func (s *Server) enroll(w http.ResponseWriter, hr *http.Request) {
	src := sourceOf(hr)
	if wait := s.throttle.blocked(src); wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts; retry later")
		return
	}
	var req EnrollRequest
	if err := decode(hr, smallBody, &req); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	// Check what can be checked before the one-time token is spent.
	if err := identity.ValidateAgentName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, "enroll: "+err.Error())
		return
	}
	if _, err := x509.ParseCertificateRequest(req.CSR); err != nil {
		writeError(w, http.StatusBadRequest, "enroll: csr is not a DER certificate request")
		return
	}
	tok, err := s.cfg.Tokens.ConsumeJoin(hr.Context(), req.JoinToken)
	if err != nil {
		s.throttle.fail(src)
		s.record(hr.Context(), audit.Event{Actor: "anonymous", Action: "agent.enroll", Object: "agent:" + req.Name, Result: "unauthenticated", Source: src})
		writeError(w, http.StatusUnauthorized, "invalid, expired or already used join token")
		return
	}
	der, err := s.cfg.Fleet.Enroll(hr.Context(), req.Name, req.CSR, src)
	ev := audit.Event{Actor: "token:" + tok.ID, Action: "agent.enroll", Object: "agent:" + req.Name, Result: "ok", Source: src}
	if err != nil {
		ev.Result = "invalid"
	}
	if aerr := s.record(hr.Context(), ev); aerr != nil {
		writeError(w, http.StatusInternalServerError, "audit trail unavailable")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "enroll: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, EnrollResponse{Certificate: der, CAPEM: string(s.cfg.CAPEM)})
}
