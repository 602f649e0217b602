package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authz"
)

func (s *Server) queryAudit(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Secret: q.Get("secret"), Object: q.Get("object")}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v)
		if err != nil {
			return 0, nil, err
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, fmt.Errorf("%w: limit %q: a non-negative number", errBadRequest, v)
		}
		f.Limit = n
	}
	evs, err := s.cfg.Audit.Query(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	out := []audit.Event{}
	for _, ev := range evs {
		if r.p.Scope == "" || inScope(r.p, ev) {
			out = append(out, ev)
		}
	}
	evs = out
	return http.StatusOK, evs, nil
}

// inScope reports whether an audit record is about a secret within p's scope.
func inScope(p authz.Principal, ev audit.Event) bool {
	name := ev.Details["secret"]
	if n, ok := strings.CutPrefix(ev.Object, "secret:"); ok {
		name = n
	}
	return name != "" && authz.InScope(p, name)
}

// parseSince accepts RFC 3339 times and durations ("1h" = the last hour).
func parseSince(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: since %q: use RFC 3339 (2026-01-02T15:04:05Z) or a duration (24h)", errBadRequest, v)
	}
	return t, nil
}

// VerifyResponse is the answer of GET /v1/audit/verify.
type VerifyResponse struct {
	OK      bool   `json:"ok"`
	Records uint64 `json:"records"`
	Head    string `json:"head"`
	Error   string `json:"error,omitempty"`
}

// verifyAudit checks the live trail; with ?head=SEQ:HASH (a head exported
// earlier by GET /v1/audit/head), also that the trail still contains it.
func (s *Server) verifyAudit(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	var through *audit.Head
	if v := r.URL.Query().Get("head"); v != "" {
		h, err := audit.ParseHead(v)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: head: %v", errBadRequest, err)
		}
		through = &h
		r.note("head", h.String())
	}
	h, err := s.cfg.Audit.Verify(r.Context(), through)
	if err != nil {
		return http.StatusOK, VerifyResponse{OK: false, Records: h.Seq, Error: err.Error()}, nil
	}
	return http.StatusOK, VerifyResponse{OK: true, Records: h.Seq, Head: h.Hash}, nil
}

// auditHead returns the seq and hash of the last durable record: keep it
// somewhere else and pass it to verify later to catch a cut or rewritten
// trail.
func (s *Server) auditHead(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.cfg.Audit.Head(), nil
}
