package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"coffer/internal/authz"
	"coffer/internal/catalog"
)

// ApplyRequest is the body of POST /v1/apply: the bindings wanted, in full.
type ApplyRequest struct {
	Bindings []catalog.Binding `json:"bindings"`
	// Owner is the ownership marker (default catalog.DefaultOwner): the
	// managed_by of the bindings this apply creates, and, with Prune, of
	// the bindings it deletes when they are not in Bindings.
	Owner string `json:"owner,omitempty"`
	Prune bool   `json:"prune,omitempty"`
}

// applyBody bounds POST /v1/apply: room for thousands of bindings.
const applyBody = 4 << 20

// applyBindings makes the bindings of the token's scope what the request
// says, in one transaction (all or nothing).
func (s *Server) applyBindings(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	dry, err := r.dryRunOnly()
	if err != nil {
		return 0, nil, err
	}
	var req ApplyRequest
	if err := decode(r.Request, applyBody, &req); err != nil {
		return 0, nil, err
	}
	if req.Owner == "" {
		req.Owner = catalog.DefaultOwner
	}
	if req.Bindings == nil {
		return 0, nil, fmt.Errorf("%w: \"bindings\" is required (an empty list, with prune, deletes every binding of the owner)", errBadRequest)
	}
	for _, b := range req.Bindings {
		if err := authz.Authorize(r.p, r.action, b.Secret); err != nil {
			return 0, nil, fmt.Errorf("binding %s: %w", b.Name, err)
		}
	}
	r.note("owner", req.Owner)
	if req.Prune {
		r.note("prune", "true")
	}
	res, err := s.cfg.Catalog.ApplyBindings(r.Context(), catalog.ApplyRequest{
		Bindings: req.Bindings, Owner: req.Owner, Prune: req.Prune, DryRun: dry,
		Visible: func(b catalog.Binding) bool { return authz.InScope(r.p, b.Secret) },
		Check: func(prev, _ *catalog.Binding) error {
			if prev != nil && !authz.InScope(r.p, prev.Secret) {
				return fmt.Errorf("%w: binding %s serves a secret outside this token's scope", authz.ErrDenied, prev.Name)
			}
			return nil
		},
	})
	if err != nil {
		return 0, nil, err
	}
	plan := newPlan(dry)
	plan.Created = append(plan.Created, res.Created...)
	plan.Updated = append(plan.Updated, res.Updated...)
	plan.Deleted = append(plan.Deleted, res.Deleted...)
	plan.Unchanged = append(plan.Unchanged, res.Unchanged...)
	var updated []string
	for _, u := range res.Updated {
		updated = append(updated, u.After.Name)
	}
	noteNames(r, "created", names(res.Created))
	noteNames(r, "updated", updated)
	noteNames(r, "deleted", names(res.Deleted))
	r.note("unchanged", strconv.Itoa(len(res.Unchanged)))
	if dry {
		s.preview(r, &plan, res.Set)
	}
	return http.StatusOK, plan, nil
}

func names(bs []catalog.Binding) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

// noteNames records a list of binding names for the audit trail, cut at
// 2 KiB (the count is always there).
func noteNames(r *request, key string, ns []string) {
	if len(ns) == 0 {
		return
	}
	list := strings.Join(ns, ",")
	if len(list) > 2048 {
		list = list[:strings.LastIndexByte(list[:2048], ',')+1] + "..."
	}
	r.note(key, list)
	r.note(key+"_count", strconv.Itoa(len(ns)))
}
