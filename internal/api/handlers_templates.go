package api

import (
	"fmt"
	"net/http"
	"strconv"

	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/tmpl"
)

// TemplateRequest is the body of PUT /v1/templates/{name}.
type TemplateRequest struct {
	Template string `json:"template"` // text/template source (package tmpl)
}

// putTemplate makes a secret templated: rendered on the server, in memory,
// from the secrets its template reads, every one of which must be within
// the caller's scope.
func (s *Server) putTemplate(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	var req TemplateRequest
	if err := decode(r.Request, int64(tmpl.MaxSource)*2+smallBody, &req); err != nil {
		return 0, nil, err
	}
	if req.Template == "" {
		return 0, nil, fmt.Errorf("%w: \"template\" is required", errBadRequest)
	}
	inScope := func(in string) error {
		if !authz.InScope(r.p, in) {
			return fmt.Errorf("outside this token's scope %q", r.p.Scope)
		}
		return nil
	}
	res, err := s.cfg.Catalog.PutTemplate(r.Context(), name, req.Template, r.p.ID, inScope, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(res.Current, 10))
	r.note("inputs", strconv.Itoa(len(res.Template.Inputs)))
	if dry {
		change := broker.EffectRotate
		if res.Was != catalog.Live {
			change = broker.EffectGain
		}
		return http.StatusOK, SecretPlan{DryRun: true, Secret: name, Action: "template", State: res.Was.String(), Version: res.Current,
			Effects: s.granted(name, change)}, nil
	}
	code := http.StatusOK
	if res.Was != catalog.Live {
		code = http.StatusCreated
	}
	return code, res.SecretMeta, nil
}
