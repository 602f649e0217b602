package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/linker"
)

// Linker is what the API needs of the linked-secrets service (package
// linker): resolving a reference to its current value, and health.
type Linker interface {
	Resolve(ctx context.Context, from string) (catalog.Link, catalog.LinkedVersion, error)
	LinkState(l catalog.Link) linker.LinkStatus
	Status() []linker.UpstreamStatus
	Degraded() []string
}

// LinkRequest is the body of PUT /v1/links/{name}.
type LinkRequest struct {
	From string `json:"from"` // UPSTREAM:ITEM[#KEY]
}

// errNoKeystores answers link requests on a server without keystores.
var errNoKeystores = fmt.Errorf("%w: this server has no keystores configured (see the keystores: section of its configuration in docs/keystores.md)", keystore.ErrInvalidRef)

// linkSecret links a secret to an upstream item, or relinks it: the item
// is read at once (nothing is changed if it cannot be), and its value
// becomes the secret's new version.
func (s *Server) linkSecret(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	var req LinkRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if req.From == "" {
		return 0, nil, fmt.Errorf("%w: \"from\" (UPSTREAM:ITEM[#KEY]) is required", errBadRequest)
	}
	r.note("from", req.From)
	if s.cfg.Dynamic != nil && (s.cfg.Dynamic.Handles(req.From) || s.cfg.Links == nil) {
		return s.linkDynamic(r, name, dry, req.From)
	}
	if s.cfg.Links == nil {
		return 0, nil, errNoKeystores
	}
	lk, v, err := s.cfg.Links.Resolve(r.Context(), req.From)
	if err != nil {
		return 0, nil, err
	}
	defer v.Value.Zero()
	res, err := s.cfg.Catalog.LinkSecret(r.Context(), name, lk, v, r.p.ID, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(res.Current, 10))
	r.note("upstream_version", v.Upstream)
	if !res.Changed {
		r.note("unchanged", "true")
	}
	if dry {
		change := broker.EffectRotate
		if res.Was != catalog.Live {
			change = broker.EffectGain
		}
		plan := SecretPlan{DryRun: true, Secret: name, Action: "link", State: res.Was.String(), Version: res.Current, Link: lk.From,
			Effects: []broker.Effect{}, Unchanged: !res.Changed}
		if res.Changed {
			plan.Effects = s.granted(name, change)
		}
		return http.StatusOK, plan, nil
	}
	code := http.StatusOK
	if res.Was != catalog.Live {
		code = http.StatusCreated
	}
	return code, res.SecretMeta, nil
}

// unlinkSecret removes a linked secret at once (like a purge).
func (s *Server) unlinkSecret(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	lk, was, err := s.cfg.Catalog.Unlink(r.Context(), name, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("from", lk.From)
	r.note("was", was.String())
	if !dry {
		return http.StatusNoContent, nil, nil
	}
	plan := SecretPlan{DryRun: true, Secret: name, Action: "unlink", State: was.String(), Link: lk.From, Effects: []broker.Effect{}}
	if was == catalog.Live {
		plan.Effects = s.granted(name, broker.EffectLose)
	}
	return http.StatusOK, plan, nil
}

// listKeystores reports the configured upstreams and their health.
func (s *Server) listKeystores(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	if _, err := params(r); err != nil {
		return 0, nil, err
	}
	out := []linker.UpstreamStatus{}
	if s.cfg.Links != nil {
		out = s.cfg.Links.Status()
	}
	if s.cfg.Dynamic != nil {
		out = append(out, s.cfg.Dynamic.Status()...)
	}
	return http.StatusOK, out, nil
}

// keystoreStatus maps keystore errors: a reference or item that cannot be
// linked is the request's fault (400); an upstream that cannot be reached
// or refuses Coffer's credentials is a bad gateway (502).
func keystoreStatus(err error) (int, bool) {
	switch {
	case errors.Is(err, keystore.ErrUnreachable), errors.Is(err, keystore.ErrAccessLost):
		return http.StatusBadGateway, true
	case errors.Is(err, keystore.ErrInvalidRef), errors.Is(err, keystore.ErrNotFound), errors.Is(err, keystore.ErrNoKey),
		errors.Is(err, keystore.ErrDisabled), errors.Is(err, keystore.ErrTooLarge):
		return http.StatusBadRequest, true
	}
	return 0, false
}
