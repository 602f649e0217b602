package api

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/linker"
	"coffer/internal/secret"
)

const smallBody = 64 << 10

// PutSecretRequest is the body of PUT /v1/secrets/{name}: exactly one of
// Value (base64) and Generate.
type PutSecretRequest struct {
	Value    *string       `json:"value,omitempty"`
	Generate *GenerateSpec `json:"generate,omitempty"`
}

// GenerateSpec asks the server to make a random value.
type GenerateSpec struct {
	Length   int    `json:"length"`
	Alphabet string `json:"alphabet,omitempty"`
}

// SecretPlan is the answer to a dry run of a change to a secret: what
// would happen, and to which running containers. Nothing is stored.
type SecretPlan struct {
	DryRun bool   `json:"dry_run"`
	Secret string `json:"secret"`
	Action string `json:"action"` // put, rollback, delete, purge, undelete, link, unlink, template
	State  string `json:"state"`  // where the secret stands now: live, deleted or absent
	// Version is the version that would be current (put, rollback,
	// undelete); From and To are a rollback's current version and the one
	// it would copy.
	Version    uint64          `json:"version,omitempty"`
	From       uint64          `json:"from,omitempty"`
	To         uint64          `json:"to,omitempty"`
	Link       string          `json:"ref,omitempty"`        // link, unlink: the upstream reference
	Unchanged  bool            `json:"unchanged,omitempty"`  // link: already linked there at that upstream version
	PurgeAfter time.Time       `json:"purge_after,omitzero"` // delete: when it would be purged
	Effects    []broker.Effect `json:"effects"`              // running containers that would gain, lose or rotate the secret
}

// params checks r's query: every parameter is one of allowed, given once.
func params(r *request, allowed ...string) (url.Values, error) {
	q := r.URL.Query()
	for k, vs := range q {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		switch {
		case !known && len(allowed) == 0:
			return nil, fmt.Errorf("%w: unknown query parameter %q (this operation takes none)", errBadRequest, k)
		case !known:
			return nil, fmt.Errorf("%w: unknown query parameter %q (this operation takes %s)", errBadRequest, k, strings.Join(allowed, ", "))
		case len(vs) > 1:
			return nil, fmt.Errorf("%w: query parameter %q given %d times", errBadRequest, k, len(vs))
		}
	}
	return q, nil
}

// flag reads a boolean query parameter: absent is false; "", "1" and
// "true" are true; "0" and "false" are false.
func flag(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	switch q.Get(name) {
	case "", "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("%w: query parameter %q: want true or false", errBadRequest, name)
}

// dryRun reads the dry_run parameter of q and notes it for the audit
// trail: a dry run is recorded under the operation's action with
// dry_run "true".
func (r *request) dryRun(q url.Values) (bool, error) {
	dry, err := flag(q, "dry_run")
	if dry {
		r.note("dry_run", "true")
	}
	return dry, err
}

// dryRunOnly reads the query of a write that takes no parameter but
// dry_run (others are refused) and notes a dry run.
func (r *request) dryRunOnly() (bool, error) {
	q, err := params(r, "dry_run")
	if err != nil {
		return false, err
	}
	return r.dryRun(q)
}

// secretWrite authorizes a write to the secret named in r's path, checks
// the name and reads dry_run, the only query parameter such writes take.
func (r *request) secretWrite() (name string, dry bool, err error) {
	name = r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return "", false, err
	}
	if err := secret.ValidateName(name); err != nil {
		return "", false, err
	}
	dry, err = r.dryRunOnly()
	return name, dry, err
}

func (s *Server) putSecret(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	var req PutSecretRequest
	limit := int64(s.cfg.MaxValueSize)*4/3 + smallBody
	if err := decode(r.Request, limit, &req); err != nil {
		return 0, nil, err
	}
	var res catalog.PutResult
	switch {
	case (req.Value == nil) == (req.Generate == nil):
		return 0, nil, fmt.Errorf("%w: give exactly one of \"value\" (base64) and \"generate\"", errBadRequest)
	case req.Generate != nil:
		res, err = s.cfg.Catalog.GenerateVersion(r.Context(), name, req.Generate.Length, req.Generate.Alphabet, r.p.ID, dry)
		r.note("generated", "true")
	default:
		v, derr := base64.StdEncoding.DecodeString(*req.Value)
		if derr != nil {
			return 0, nil, fmt.Errorf("%w: \"value\" is not valid base64", errBadRequest)
		}
		val := secret.Value(v)
		res, err = s.cfg.Catalog.PutVersion(r.Context(), name, val, r.p.ID, dry)
		val.Zero()
		clear([]byte(*req.Value))
	}
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(res.Current, 10))
	if res.Restored {
		r.note("restored", "true")
	}
	if dry {
		change := broker.EffectRotate
		if res.Was != catalog.Live {
			change = broker.EffectGain
		}
		return http.StatusOK, SecretPlan{DryRun: true, Secret: name, Action: "put", State: res.Was.String(), Version: res.Current,
			Effects: s.granted(name, change)}, nil
	}
	code := http.StatusOK
	if res.Current == 1 {
		code = http.StatusCreated
	}
	return code, res.SecretMeta, nil
}

// granted lists the running containers the bindings give secret name,
// as effects of kind change.
func (s *Server) granted(name, change string) []broker.Effect {
	if s.cfg.Broker == nil {
		return []broker.Effect{}
	}
	if es := s.cfg.Broker.Granted(name, change); es != nil {
		return es
	}
	return []broker.Effect{}
}

func (s *Server) listSecrets(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	q, err := params(r, "prefix", "deleted")
	if err != nil {
		return 0, nil, err
	}
	deleted, err := flag(q, "deleted")
	if err != nil {
		return 0, nil, err
	}
	list := s.cfg.Catalog.List
	if deleted {
		list = s.cfg.Catalog.ListDeleted
		r.note("deleted", "true")
	}
	all, err := list(r.Context(), q.Get("prefix"))
	if err != nil {
		return 0, nil, err
	}
	out := []catalog.SecretMeta{}
	for _, m := range all {
		if authz.InScope(r.p, m.Name) {
			out = append(out, m)
		}
	}
	return http.StatusOK, out, nil
}

// SecretView is a secret's metadata with its rollout state.
type SecretView struct {
	catalog.SecretMeta
	Holders []HolderView `json:"holders"`
	Pending int          `json:"pending"`
	// LinkStatus is, for a linked secret, where it stands with its
	// upstream (ok, degraded: containers keep the last value, revoked).
	LinkStatus *linker.LinkStatus `json:"link_status,omitempty"`
}

// HolderView is a container's state for a secret; for a linked secret,
// with the upstream's id of the version it holds.
type HolderView struct {
	broker.Holder
	UpstreamVersion string `json:"upstream_version,omitempty"`
}

func (s *Server) showSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	meta, err := s.cfg.Catalog.Show(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	v := SecretView{SecretMeta: meta, Holders: []HolderView{}}
	upstream := map[uint64]string{}
	for _, vm := range meta.Versions {
		upstream[vm.Version] = vm.Upstream
	}
	if s.cfg.Broker != nil {
		holders, err := s.rollout(r.Context(), name)
		if err != nil {
			return 0, nil, err
		}
		for _, h := range holders {
			hv := HolderView{Holder: h, UpstreamVersion: upstream[h.Version]}
			if meta.Link != nil && meta.Link.Dynamic {
				hv.UpstreamVersion = s.cfg.Broker.LeaseOf(h.ContainerID, name) // its own lease
			}
			v.Holders = append(v.Holders, hv)
			if h.Pending {
				v.Pending++
			}
		}
	}
	if meta.Link != nil && meta.Link.Dynamic && s.cfg.Dynamic != nil {
		st := s.cfg.Dynamic.LinkState(*meta.Link)
		v.LinkStatus = &st
	} else if meta.Link != nil && s.cfg.Links != nil {
		st := s.cfg.Links.LinkState(*meta.Link)
		v.LinkStatus = &st
	}
	return http.StatusOK, v, nil
}

// deleteSecret deletes a secret restorably, or with purge=true destroys it
// (live or deleted) at once.
func (s *Server) deleteSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	q, err := params(r, "purge", "dry_run")
	if err != nil {
		return 0, nil, err
	}
	purge, err := flag(q, "purge")
	if err != nil {
		return 0, nil, err
	}
	dry, err := r.dryRun(q)
	if err != nil {
		return 0, nil, err
	}
	if purge {
		r.note("purge", "true")
		was, err := s.cfg.Catalog.Purge(r.Context(), name, dry)
		if err != nil {
			return 0, nil, err
		}
		r.note("was", was.String())
		if !dry {
			return http.StatusNoContent, nil, nil
		}
		plan := SecretPlan{DryRun: true, Secret: name, Action: "purge", State: was.String(), Effects: []broker.Effect{}}
		if was == catalog.Live {
			plan.Effects = s.granted(name, broker.EffectLose)
		}
		return http.StatusOK, plan, nil
	}
	meta, err := s.cfg.Catalog.SoftDelete(r.Context(), name, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("purge_after", meta.PurgeAfter.Format(time.RFC3339))
	if !dry {
		return http.StatusNoContent, nil, nil
	}
	return http.StatusOK, SecretPlan{DryRun: true, Secret: name, Action: "delete", State: catalog.Live.String(),
		PurgeAfter: meta.PurgeAfter, Effects: s.granted(name, broker.EffectLose)}, nil
}

// RollbackRequest is the body of POST /v1/rollback/{name}.
type RollbackRequest struct {
	To *uint64 `json:"to"`
}

func (s *Server) rollbackSecret(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	var req RollbackRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	if req.To == nil {
		return 0, nil, fmt.Errorf("%w: \"to\" (the version to roll back to) is required", errBadRequest)
	}
	r.note("to", strconv.FormatUint(*req.To, 10))
	res, err := s.cfg.Catalog.Rollback(r.Context(), name, *req.To, r.p.ID, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("from", strconv.FormatUint(res.From, 10))
	r.note("version", strconv.FormatUint(res.Current, 10))
	if dry {
		return http.StatusOK, SecretPlan{DryRun: true, Secret: name, Action: "rollback", State: catalog.Live.String(),
			Version: res.Current, From: res.From, To: res.To, Effects: s.granted(name, broker.EffectRotate)}, nil
	}
	return http.StatusOK, res.SecretMeta, nil
}

func (s *Server) undeleteSecret(r *request) (int, any, error) {
	name, dry, err := r.secretWrite()
	if err != nil {
		return 0, nil, err
	}
	if n, _ := io.ReadFull(r.Body, make([]byte, 1)); n > 0 {
		return 0, nil, fmt.Errorf("%w: undelete takes no body", errBadRequest)
	}
	meta, err := s.cfg.Catalog.Undelete(r.Context(), name, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(meta.Current, 10))
	if dry {
		return http.StatusOK, SecretPlan{DryRun: true, Secret: name, Action: "undelete", State: catalog.Deleted.String(),
			Version: meta.Current, Effects: s.granted(name, broker.EffectGain)}, nil
	}
	return http.StatusOK, meta, nil
}
