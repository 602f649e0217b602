package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/fleet"
	"coffer/internal/incident"
	"coffer/internal/secret"
)

// Incident response: each action is admin-only, needs a reason, and is
// audited with it (incident.*).

const (
	defaultQuarantineWait = 10 * time.Second
	maxQuarantineWait     = 2 * time.Minute
	maxReason             = 1024
)

func (r *request) reason(reason string) error {
	switch {
	case reason == "":
		return fmt.Errorf("%w: \"reason\" is required: say why, for the audit trail", errBadRequest)
	case len(reason) > maxReason:
		return fmt.Errorf("%w: \"reason\" is longer than %d bytes", errBadRequest, maxReason)
	}
	r.note("reason", reason)
	return nil
}

// QuarantineRequest is the body of POST /v1/incident/quarantine.
type QuarantineRequest struct {
	Agent  string `json:"agent"`
	Reason string `json:"reason"`
	// Wait is how long to wait for the agent to acknowledge the removal
	// before its certificate is revoked anyway (default 10s, at most 2m).
	Wait string `json:"wait,omitempty"`
}

// QuarantineReport is what a quarantine did.
type QuarantineReport struct {
	Agent string `json:"agent"`
	// Held is what every container of the host held when it was
	// quarantined (and what it was sent and had not acknowledged).
	Held []broker.HeldContainer `json:"held"`
	// Connected says whether the agent was connected; Acknowledged whether
	// it confirmed every container empty before its certificate was
	// revoked. An agent that was not connected, or did not confirm, may
	// leave its containers their files until they stop.
	Connected    bool `json:"connected"`
	Acknowledged bool `json:"acknowledged"`
	Revoked      bool `json:"revoked"`
}

func (s *Server) quarantine(r *request) (int, any, error) {
	var req QuarantineRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if req.Agent == "" {
		return 0, nil, fmt.Errorf("%w: \"agent\" (the host's agent name) is required", errBadRequest)
	}
	if err := r.authorize("agent:"+req.Agent, ""); err != nil {
		return 0, nil, err
	}
	if err := r.reason(req.Reason); err != nil {
		return 0, nil, err
	}
	wait := defaultQuarantineWait
	if req.Wait != "" {
		d, err := time.ParseDuration(req.Wait)
		if err != nil || d < 0 || d > maxQuarantineWait {
			return 0, nil, fmt.Errorf("%w: \"wait\" %q: want a duration from 0s to %s", errBadRequest, req.Wait, maxQuarantineWait)
		}
		wait = d
	}
	within := func(a fleet.Agent) bool { return authz.ScopeWithin(r.p, a.Scope) }
	if !slices.ContainsFunc(s.cfg.Fleet.List(), func(a fleet.Agent) bool { return a.Name == req.Agent && within(a) }) {
		return 0, nil, fmt.Errorf("agent %s: %w", req.Agent, fleet.ErrNotFound)
	}
	rep := QuarantineReport{Agent: req.Agent, Held: []broker.HeldContainer{}}
	if s.cfg.Broker != nil {
		rep.Held = s.cfg.Broker.Quarantine(req.Agent)
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		rep.Acknowledged, rep.Connected = s.cfg.Broker.Emptied(ctx, req.Agent)
		cancel()
	}
	err := s.cfg.Fleet.RemoveIf(context.WithoutCancel(r.Context()), req.Agent, within)
	if s.cfg.Broker != nil {
		s.cfg.Broker.Disconnect(req.Agent)
		s.cfg.Broker.Release(req.Agent)
	}
	if err != nil {
		return 0, nil, err
	}
	rep.Revoked = true
	r.note("containers", strconv.Itoa(len(rep.Held)))
	r.note("connected", strconv.FormatBool(rep.Connected))
	r.note("acknowledged", strconv.FormatBool(rep.Acknowledged))
	return http.StatusOK, rep, nil
}

// RevokeVersionRequest is the body of POST /v1/incident/revoke-version.
type RevokeVersionRequest struct {
	Secret  string `json:"secret"`
	Version uint64 `json:"version"`
	Reason  string `json:"reason"`
	// Replace, if set, stores a newly generated value at once (a new
	// version every container gets instead of losing the secret).
	Replace *GenerateSpec `json:"replace,omitempty"`
}

// RevokeVersionReport is what revoking a version did, and who held it.
type RevokeVersionReport struct {
	Secret     string `json:"secret"`
	Version    uint64 `json:"version"`
	WasCurrent bool   `json:"was_current"`
	// Replaced is the new version generated in its place; 0 for none (the
	// containers then lost the secret, if it was current).
	Replaced uint64 `json:"replaced,omitempty"`
	// HeldBy are the containers that held the version, on which hosts,
	// from when to when (from the audit trail).
	HeldBy []incident.Holding `json:"held_by"`
}

func (s *Server) revokeVersion(r *request) (int, any, error) {
	var req RevokeVersionRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if err := secret.ValidateName(req.Secret); err != nil {
		return 0, nil, err
	}
	if err := r.authorize("secret:"+req.Secret, req.Secret); err != nil {
		return 0, nil, err
	}
	if err := r.reason(req.Reason); err != nil {
		return 0, nil, err
	}
	if req.Version == 0 {
		return 0, nil, fmt.Errorf("%w: \"version\" (the leaked version, from 1) is required", errBadRequest)
	}
	r.note("version", strconv.FormatUint(req.Version, 10))
	if req.Replace != nil {
		if m, err := s.cfg.Catalog.Show(r.Context(), req.Secret); err == nil && m.Link != nil {
			return 0, nil, fmt.Errorf("%w: secret %s is linked to %s: a replacement must be made there (rotate it upstream); revoke without \"replace\"",
				catalog.ErrConflict, req.Secret, m.Link.From)
		}
	}
	res, err := s.cfg.Catalog.RevokeVersion(r.Context(), req.Secret, req.Version, req.Reason)
	if err != nil {
		return 0, nil, err
	}
	out := RevokeVersionReport{Secret: req.Secret, Version: req.Version, WasCurrent: res.WasCurrent, HeldBy: []incident.Holding{}}
	if req.Replace != nil {
		g, err := s.cfg.Catalog.GenerateVersion(r.Context(), req.Secret, req.Replace.Length, req.Replace.Alphabet, r.p.ID, false)
		if err != nil {
			return 0, nil, fmt.Errorf("version %d was revoked, but no replacement could be generated: %w", req.Version, err)
		}
		out.Replaced = g.Current
		r.note("replaced", strconv.FormatUint(g.Current, 10))
	}
	s.flushDeliveries(r.Context())
	evs, err := s.cfg.Audit.Query(r.Context(), audit.Filter{Secret: req.Secret})
	if err != nil {
		return 0, nil, err
	}
	out.HeldBy = incident.Build(req.Secret, evs, time.Time{}, time.Time{}).HeldVersion(req.Version)
	return http.StatusOK, out, nil
}

// RevokeTokensRequest is the body of POST /v1/incident/revoke-tokens: the
// tokens matching every given field are revoked.
type RevokeTokensRequest struct {
	Principal string `json:"principal,omitempty"`  // "token:<id>", or a person's sessions: "ldap:alice"
	Role      string `json:"role,omitempty"`       // every token of this role
	Scope     string `json:"scope,omitempty"`      // every token whose scope lies within this one
	CreatedBy string `json:"created_by,omitempty"` // every token this principal made
	Reason    string `json:"reason"`
}

// RevokeTokensReport lists what was revoked.
type RevokeTokensReport struct {
	Revoked []string `json:"revoked"` // token ids
	// KeptCaller is set when the caller's own token matched: it is kept
	// (and, for a person, all of their sessions), so that the admin is not
	// locked out in the middle of an incident.
	KeptCaller bool `json:"kept_caller,omitempty"`
}

func (s *Server) revokeTokens(r *request) (int, any, error) {
	var req RevokeTokensRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	if err := r.reason(req.Reason); err != nil {
		return 0, nil, err
	}
	if req.Principal == "" && req.Role == "" && req.Scope == "" && req.CreatedBy == "" {
		return 0, nil, fmt.Errorf("%w: give at least one of \"principal\", \"role\", \"scope\" and \"created_by\"", errBadRequest)
	}
	var role authz.Role
	if req.Role != "" {
		var err error
		if role, err = authz.ParseRole(req.Role); err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
		}
	}
	scope := authz.NormalizeScope(req.Scope)
	for k, v := range map[string]string{"principal": req.Principal, "role": req.Role, "scope": req.Scope, "created_by": req.CreatedBy} {
		if v != "" {
			r.note(k, v)
		}
	}
	match := func(t authn.Token) bool {
		switch {
		case req.Principal != "" && "token:"+t.ID != req.Principal && t.Principal().ID != req.Principal:
			return false
		case role != "" && t.Role != role:
			return false
		case req.Scope != "" && !(t.Scope != "" && authz.ScopeWithin(authz.Principal{Scope: scope}, t.Scope)):
			return false
		case req.CreatedBy != "" && t.CreatedBy != req.CreatedBy:
			return false
		}
		return authz.ScopeWithin(r.p, t.Scope) // a scoped admin reaches only tokens within its scope
	}
	out := RevokeTokensReport{Revoked: []string{}}
	for _, t := range s.cfg.Tokens.List() {
		if !match(t) {
			continue
		}
		if t.Principal().ID == r.p.ID {
			out.KeptCaller = true
			continue
		}
		if err := s.cfg.Tokens.Revoke(context.WithoutCancel(r.Context()), t.ID); err != nil {
			return 0, nil, fmt.Errorf("revoked %d tokens, then: %w", len(out.Revoked), err)
		}
		out.Revoked = append(out.Revoked, t.ID)
	}
	r.note("revoked", strconv.Itoa(len(out.Revoked)))
	return http.StatusOK, out, nil
}

// LockdownRequest is the body of PUT /v1/incident/lockdown.
type LockdownRequest struct {
	Reason string `json:"reason"`
	Freeze bool   `json:"freeze,omitempty"`
}

// LockdownStatus answers GET /v1/incident/lockdown.
type LockdownStatus struct {
	Lockdown *incident.Lockdown `json:"lockdown"` // null: none in force
	Frozen   bool               `json:"frozen"`
}

func (s *Server) lockdownStatus(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	if _, err := params(r); err != nil {
		return 0, nil, err
	}
	st := LockdownStatus{}
	if s.cfg.Incident != nil {
		st.Lockdown = s.cfg.Incident.Current()
	}
	if s.cfg.Broker != nil {
		st.Frozen = s.cfg.Broker.Frozen()
	}
	return http.StatusOK, st, nil
}

func (s *Server) declareLockdown(r *request) (int, any, error) {
	var req LockdownRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if err := r.unscopedAdmin("declare a lockdown"); err != nil {
		return 0, nil, err
	}
	if err := r.reason(req.Reason); err != nil {
		return 0, nil, err
	}
	if s.cfg.Incident == nil {
		return 0, nil, fmt.Errorf("lockdown is not available on this server")
	}
	r.note("freeze", strconv.FormatBool(req.Freeze))
	l := incident.Lockdown{Since: time.Now().UTC(), By: r.p.ID, Reason: req.Reason, Freeze: req.Freeze}
	if err := s.cfg.Incident.Declare(context.WithoutCancel(r.Context()), l); err != nil {
		return 0, nil, err
	}
	if s.cfg.Broker != nil {
		s.cfg.Broker.Freeze(req.Freeze)
	}
	return http.StatusOK, LockdownStatus{Lockdown: &l, Frozen: req.Freeze}, nil
}

func (s *Server) liftLockdown(r *request) (int, any, error) {
	if err := r.unscopedAdmin("lift a lockdown"); err != nil {
		return 0, nil, err
	}
	if _, err := params(r); err != nil {
		return 0, nil, err
	}
	if s.cfg.Incident == nil {
		return 0, nil, fmt.Errorf("lockdown is not available on this server")
	}
	prev, err := s.cfg.Incident.Lift(context.WithoutCancel(r.Context()))
	if err != nil {
		return 0, nil, err
	}
	if prev == nil {
		return 0, nil, fmt.Errorf("%w: no lockdown is in force", catalog.ErrConflict)
	}
	r.note("since", prev.Since.Format(time.RFC3339))
	if s.cfg.Broker != nil {
		s.cfg.Broker.Freeze(false)
	}
	return http.StatusNoContent, nil, nil
}

// unscopedAdmin refuses anyone but an admin of the whole installation.
func (r *request) unscopedAdmin(what string) error {
	if err := r.authorize("", ""); err != nil {
		return err
	}
	if r.p.Scope != "" {
		return fmt.Errorf("%w: only an unscoped admin may %s (this token's scope is %q)", authz.ErrDenied, what, r.p.Scope)
	}
	return nil
}

// incidentReport answers GET /v1/incident/report: a secret's chain of
// custody from the audit trail, verified against the chain.
func (s *Server) incidentReport(r *request) (int, any, error) {
	q, err := params(r, "secret", "since", "until")
	if err != nil {
		return 0, nil, err
	}
	name := q.Get("secret")
	if err := secret.ValidateName(name); err != nil {
		return 0, nil, fmt.Errorf("%w: secret: %v", errBadRequest, err)
	}
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	var since, until time.Time
	for k, t := range map[string]*time.Time{"since": &since, "until": &until} {
		if v := q.Get(k); v != "" {
			if *t, err = time.Parse(time.RFC3339, v); err != nil {
				return 0, nil, fmt.Errorf("%w: %s %q: want an RFC 3339 time, e.g. 2026-12-01T10:00:00Z", errBadRequest, k, v)
			}
		}
	}
	s.flushDeliveries(r.Context())
	head, err := s.cfg.Audit.Verify(r.Context(), nil)
	verified := err == nil
	if !verified {
		head = s.cfg.Audit.Head()
	}
	evs, err := s.cfg.Audit.Query(r.Context(), audit.Filter{Secret: name, Before: head.Seq + 1})
	if err != nil {
		return 0, nil, err
	}
	rep := incident.Build(name, evs, since, until)
	rep.Head, rep.Verified = head, verified
	return http.StatusOK, rep, nil
}

// lockedOut refuses writes during a lockdown to all but admins.
func (s *Server) lockedOut(method string, p authz.Principal) error {
	if s.cfg.Incident == nil || method == http.MethodGet || method == http.MethodHead {
		return nil
	}
	l := s.cfg.Incident.Current()
	if l == nil || p.Role == authz.Admin {
		return nil
	}
	return fmt.Errorf("%w: a lockdown is in force since %s (%s): every write is refused except by admins (coffer incident status)",
		authz.ErrDenied, l.Since.Format(time.RFC3339), l.Reason)
}
