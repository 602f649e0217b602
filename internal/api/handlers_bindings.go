package api

import (
	"errors"
	"fmt"
	"net/http"

	"coffer/internal/authz"
	"coffer/internal/catalog"
	"coffer/internal/policy"
)

func (s *Server) listBindings(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	all, err := s.cfg.Catalog.ListBindings(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := []policy.Binding{}
	for _, b := range all {
		if authz.InScope(r.p, b.Secret) {
			out = append(out, b)
		}
	}
	return http.StatusOK, out, nil
}

func (s *Server) showBinding(r *request) (int, any, error) {
	b, err := s.binding(r)
	if errors.Is(err, authz.ErrDenied) {
		// Outside the token's scope: as if it did not exist.
		return 0, nil, fmt.Errorf("binding %s: %w", b.Name, catalog.ErrNotFound)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, b, nil
}

// binding loads the binding named in r's path, if r's principal may do r's
// action on bindings and on the binding's secret.
func (s *Server) binding(r *request) (policy.Binding, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	if err := authz.Authorize(r.p, r.action, ""); err != nil {
		return policy.Binding{}, err
	}
	b, err := s.cfg.Catalog.GetBinding(r.Context(), name)
	if err != nil {
		return policy.Binding{}, err
	}
	if err := authz.Authorize(r.p, r.action, b.Secret); err != nil {
		return policy.Binding{Name: name}, err
	}
	return b, nil
}

func (s *Server) putBinding(r *request) (int, any, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	var b policy.Binding
	if err := decode(r.Request, smallBody, &b); err != nil {
		return 0, nil, err
	}
	if b.Name != "" && b.Name != name {
		return 0, nil, fmt.Errorf("%w: body names binding %q, path %q", errBadRequest, b.Name, name)
	}
	b.Name = name
	if err := authz.Authorize(r.p, r.action, b.Secret); err != nil {
		return 0, nil, err
	}
	if old, err := s.cfg.Catalog.GetBinding(r.Context(), name); err == nil && !authz.InScope(r.p, old.Secret) {
		return 0, nil, fmt.Errorf("%w: binding %s serves a secret outside this token's scope", authz.ErrDenied, name)
	}
	r.note("secret", b.Secret)
	out, err := s.cfg.Catalog.PutBinding(r.Context(), b)
	if err != nil {
		return 0, nil, err
	}
	r.note("selector", out.Selector)
	if out.Hosts != "" {
		r.note("hosts", out.Hosts)
	}
	return http.StatusOK, out, nil
}

func (s *Server) deleteBinding(r *request) (int, any, error) {
	b, err := s.binding(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, s.cfg.Catalog.DeleteBinding(r.Context(), b.Name)
}

// EvaluateRequest describes a container for POST /v1/evaluate: its own
// labels, its image's labels (what image.label/ keys see) and the labels of
// the host whose agent would report it (omitted: a host without labels).
type EvaluateRequest struct {
	Labels      map[string]string `json:"labels"`
	ImageLabels map[string]string `json:"image_labels,omitempty"`
	HostLabels  map[string]string `json:"host_labels,omitempty"`
	Image       string            `json:"image,omitempty"`
	ImageDigest string            `json:"image_digest,omitempty"`
}

func (s *Server) evaluate(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	var req EvaluateRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if err := policy.ValidateLabels(req.HostLabels); err != nil {
		return 0, nil, fmt.Errorf("%w: host_labels: %w", errBadRequest, err)
	}
	if err := policy.ValidateLabels(req.ImageLabels); err != nil {
		return 0, nil, fmt.Errorf("%w: image_labels: %w", errBadRequest, err)
	}
	grants := s.cfg.Catalog.Bindings().Match(policy.Target{
		Labels: req.Labels, ImageLabels: req.ImageLabels, HostLabels: req.HostLabels,
		Image: req.Image, ImageDigest: req.ImageDigest,
	})
	out := []policy.Grant{}
	for _, g := range grants {
		if authz.InScope(r.p, g.Secret) {
			out = append(out, g)
		}
	}
	return http.StatusOK, out, nil
}
