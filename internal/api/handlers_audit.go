package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authz"
)

// auditParams are the query parameters GET /v1/audit understands; any
// other is refused, so that a misspelt filter never silently returns
// everything.
var auditParams = []string{"actor", "action", "object", "secret", "result", "since", "until", "after", "before", "limit"}

// actionHints maps action names people guess to the ones Coffer records.
var actionHints = map[string]string{
	"secret.rm": "secret.delete", "secret.remove": "secret.delete", "secret.create": "secret.put",
	"secret.rotate": "secret.put", "secret.generate": "secret.put",
	"bind.create": "binding.put", "binding.create": "binding.put", "binding.update": "binding.put",
	"bind.rm": "binding.delete", "binding.rm": "binding.delete",
	"token.rm": "token.revoke", "token.delete": "token.revoke",
	"agent.rm": "agent.revoke", "agent.remove": "agent.revoke", "agent.delete": "agent.revoke",
}

// auditFilter reads the query of GET /v1/audit. Errors wrap errBadRequest.
func auditFilter(q url.Values) (audit.Filter, error) {
	for k := range q {
		if !slices.Contains(auditParams, k) {
			return audit.Filter{}, fmt.Errorf("%w: unknown query parameter %q (use %s)", errBadRequest, k, strings.Join(auditParams, ", "))
		}
		if len(q[k]) > 1 {
			return audit.Filter{}, fmt.Errorf("%w: query parameter %q given %d times", errBadRequest, k, len(q[k]))
		}
	}
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Secret: q.Get("secret"), Object: q.Get("object"), Result: q.Get("result")}
	if hint, ok := actionHints[f.Action]; ok {
		return f, fmt.Errorf("%w: action %q is never recorded: did you mean %q?", errBadRequest, f.Action, hint)
	}
	var err error
	for _, t := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.name); v != "" {
			if *t.to, err = parseTime(t.name, v); err != nil {
				return f, err
			}
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, fmt.Errorf("%w: until must be after since", errBadRequest)
	}
	for _, n := range []struct {
		name string
		to   *uint64
	}{{"after", &f.After}, {"before", &f.Before}} {
		if v := q.Get(n.name); v != "" {
			if *n.to, err = strconv.ParseUint(v, 10, 64); err != nil {
				return f, fmt.Errorf("%w: %s %q: a record's seq (a non-negative number)", errBadRequest, n.name, v)
			}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("%w: limit %q: a non-negative number", errBadRequest, v)
		}
		f.Limit = n
	}
	return f, nil
}

func (s *Server) queryAudit(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	f, err := auditFilter(r.URL.Query())
	if err != nil {
		return 0, nil, err
	}
	if r.p.Scope != "" {
		// Inside the query, so that the limit counts only records the
		// token may see.
		p := r.p
		f.Keep = func(ev *audit.Event) bool { return inScope(p, *ev) }
	}
	s.flushDeliveries(r.Context())
	evs, err := s.cfg.Audit.Query(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	if evs == nil {
		evs = []audit.Event{}
	}
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

// parseTime reads since/until: an RFC 3339 time or a duration ago ("1h" =
// an hour ago).
func parseTime(name, v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q: use RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (24h)", errBadRequest, name, v)
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

// flushWait bounds how long a read of the trail waits for this server's
// queued delivery records.
const flushWait = 2 * time.Second

// flushDeliveries lets the delivery records this server has queued (a
// delivery acknowledged a moment ago) reach the trail before it is read, so
// that an incident report or an audit query right after a rollout shows
// it. Bounded: under a flood of acknowledgements the read goes on with what
// is there.
func (s *Server) flushDeliveries(ctx context.Context) {
	if s.cfg.Broker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, flushWait)
	defer cancel()
	if err := s.cfg.Broker.FlushAudit(ctx); err != nil {
		s.log.Warn("audit read without every queued delivery record", "err", err)
	}
}
