package api

import (
	"context"
	"net/http"
	"strconv"

	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/linker"
)

// DynamicLinker is what the API needs of the per-container leases of
// dynamic linked secrets (package lease).
type DynamicLinker interface {
	// Handles reports whether a reference's upstream issues credentials.
	Handles(from string) bool
	// Probe checks a reference by issuing one lease and revoking it.
	Probe(ctx context.Context, from string) (catalog.Link, error)
	LinkState(l catalog.Link) linker.LinkStatus
	// Status and Degraded report the issuing upstreams' health.
	Status() []linker.UpstreamStatus
	Degraded() []string
}

// linkDynamic links a secret to an upstream path that issues credentials:
// the path is tried at once (one lease issued and revoked; nothing is
// changed if that fails), and every container bound to the secret then
// gets its own lease.
func (s *Server) linkDynamic(r *request, name string, dry bool, from string) (int, any, error) {
	lk, err := s.cfg.Dynamic.Probe(r.Context(), from)
	if err != nil {
		return 0, nil, err
	}
	r.note("dynamic", "true")
	res, err := s.cfg.Catalog.LinkDynamic(r.Context(), name, lk, r.p.ID, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(res.Current, 10))
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
