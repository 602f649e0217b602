package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/policy"
)

func (s *Server) listBindings(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	if _, err := params(r); err != nil {
		return 0, nil, err
	}
	all, err := s.cfg.Catalog.ListBindings(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := []catalog.Binding{}
	for _, b := range all {
		if authz.InScope(r.p, b.Secret) {
			out = append(out, b)
		}
	}
	return http.StatusOK, out, nil
}

func (s *Server) showBinding(r *request) (int, any, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	if err := authz.Authorize(r.p, r.action, ""); err != nil {
		return 0, nil, err
	}
	b, err := s.cfg.Catalog.GetBinding(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	if !authz.InScope(r.p, b.Secret) {
		return 0, nil, hidden(name)
	}
	return http.StatusOK, b, nil
}

// hidden is the answer about a binding whose secret is outside the
// token's scope: as if it did not exist, whatever the request.
func hidden(name string) error { return fmt.Errorf("binding %s: %w", name, catalog.ErrNotFound) }

// BindingPlan is what a change to bindings did, or, for a dry run, would
// do: the bindings created, updated (before and after), deleted and left
// as they were, and (dry runs only) what the running containers would gain
// and lose. Secrets of the token's scope only.
type BindingPlan struct {
	DryRun    bool                    `json:"dry_run"`
	Created   []catalog.Binding       `json:"created"`
	Updated   []catalog.BindingChange `json:"updated"`
	Deleted   []catalog.Binding       `json:"deleted"`
	Unchanged []string                `json:"unchanged"`
	Effects   []broker.Effect         `json:"effects"`
	// SecretsMissing lists the secrets that containers would gain but that
	// do not exist (or are deleted): nothing is delivered until they do.
	SecretsMissing []string `json:"secrets_missing"`
}

func newPlan(dry bool) BindingPlan {
	return BindingPlan{DryRun: dry, Created: []catalog.Binding{}, Updated: []catalog.BindingChange{}, Deleted: []catalog.Binding{},
		Unchanged: []string{}, Effects: []broker.Effect{}, SecretsMissing: []string{}}
}

// preview fills p's effects: what the running containers would gain and
// lose under set, for secrets in r's scope.
func (s *Server) preview(r *request, p *BindingPlan, set *policy.Set) {
	if s.cfg.Broker == nil {
		return
	}
	missing := map[string]bool{}
	for _, e := range s.cfg.Broker.Preview(set) {
		if !authz.InScope(r.p, e.Secret) {
			continue
		}
		p.Effects = append(p.Effects, e)
		if _, seen := missing[e.Secret]; !seen && e.Change == broker.EffectGain {
			_, err := s.cfg.Catalog.Current(r.Context(), e.Secret)
			missing[e.Secret] = errors.Is(err, catalog.ErrNotFound)
			if missing[e.Secret] {
				p.SecretsMissing = append(p.SecretsMissing, e.Secret)
			}
		}
	}
	slices.Sort(p.SecretsMissing)
}

// preconditions reads If-None-Match: * (create only: 409 if the binding
// exists) and If-Match: * (replace only: 404 if it does not).
func preconditions(r *request, name string) (catalog.Check, error) {
	none, match := r.Header.Get("If-None-Match"), r.Header.Get("If-Match")
	switch {
	case none != "" && match != "":
		return nil, fmt.Errorf("%w: give If-None-Match or If-Match, not both", errBadRequest)
	case none == "*":
		r.note("if", "absent")
		return catalog.MustNotExist(name), nil
	case match == "*":
		r.note("if", "exists")
		return catalog.MustExist(name), nil
	case none != "" || match != "":
		return nil, fmt.Errorf("%w: If-None-Match and If-Match take only \"*\"", errBadRequest)
	}
	return nil, nil
}

func (s *Server) putBinding(r *request) (int, any, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	dry, err := r.dryRunOnly()
	if err != nil {
		return 0, nil, err
	}
	pre, err := preconditions(r, name)
	if err != nil {
		return 0, nil, err
	}
	var b catalog.Binding
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
	r.note("secret", b.Secret)
	inScope := func(prev *catalog.Binding) error {
		if prev != nil && !authz.InScope(r.p, prev.Secret) {
			return fmt.Errorf("%w: binding %s serves a secret outside this token's scope", authz.ErrDenied, name)
		}
		return nil
	}
	res, err := s.cfg.Catalog.PutBindingIf(r.Context(), b, catalog.All(inScope, pre), dry)
	if err != nil {
		return 0, nil, err
	}
	out := *res.After
	r.note("selector", out.Selector)
	if out.Hosts != "" {
		r.note("hosts", out.Hosts)
	}
	if res.Before != nil {
		r.note("replaced", "true")
	}
	if !dry {
		return http.StatusOK, out, nil
	}
	plan := newPlan(true)
	switch {
	case res.Before == nil:
		plan.Created = append(plan.Created, out)
	case *res.Before == out:
		plan.Unchanged = append(plan.Unchanged, name)
	default:
		plan.Updated = append(plan.Updated, res.BindingChange)
	}
	s.preview(r, &plan, res.Set)
	return http.StatusOK, plan, nil
}

func (s *Server) deleteBinding(r *request) (int, any, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	if err := authz.Authorize(r.p, r.action, ""); err != nil {
		return 0, nil, err
	}
	dry, err := r.dryRunOnly()
	if err != nil {
		return 0, nil, err
	}
	res, err := s.cfg.Catalog.DeleteBindingIf(r.Context(), name, func(prev *catalog.Binding) error {
		if prev != nil && !authz.InScope(r.p, prev.Secret) {
			return hidden(name) // as GET answers: a binding outside the scope does not exist
		}
		return nil
	}, dry)
	if err != nil {
		return 0, nil, err
	}
	r.note("secret", res.Before.Secret)
	if !dry {
		return http.StatusNoContent, nil, nil
	}
	plan := newPlan(true)
	plan.Deleted = append(plan.Deleted, *res.Before)
	s.preview(r, &plan, res.Set)
	return http.StatusOK, plan, nil
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

// Explanation is POST /v1/evaluate?explain=true: the grants, the grants an
// override hid, and why the other bindings did not match.
type Explanation struct {
	Granted  []policy.Grant  `json:"granted"`
	Shadowed []ShadowedGrant `json:"shadowed"`
	// Unmatched: the first MaxUnmatched bindings of the token's scope that
	// do not match, those that fail only on their image or hosts first.
	Unmatched      []Unmatched `json:"unmatched"`
	UnmatchedTotal int         `json:"unmatched_total"`
}

// ShadowedGrant is a grant left out because another binding with a
// smaller name wanted the same file.
type ShadowedGrant struct {
	policy.Grant
	By string `json:"by"` // the binding that got the file; "" if its secret is outside the token's scope
}

// Unmatched is a binding that does not match, and the first reason.
type Unmatched struct {
	Binding string `json:"binding"`
	Secret  string `json:"secret"`
	Reason  string `json:"reason"`
}

// MaxUnmatched bounds Explanation.Unmatched.
const MaxUnmatched = 100

func (s *Server) evaluate(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	q, err := params(r, "explain")
	if err != nil {
		return 0, nil, err
	}
	explain, err := flag(q, "explain")
	if err != nil {
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
	t := policy.Target{
		Labels: req.Labels, ImageLabels: req.ImageLabels, HostLabels: req.HostLabels,
		Image: req.Image, ImageDigest: req.ImageDigest,
	}
	set := s.cfg.Catalog.Bindings()
	granted, shadowed := set.Explain(t)
	out := []policy.Grant{}
	for _, g := range granted {
		if authz.InScope(r.p, g.Secret) {
			out = append(out, g)
		}
	}
	if !explain {
		return http.StatusOK, out, nil
	}
	r.note("explain", "true")
	ex := Explanation{Granted: out, Shadowed: []ShadowedGrant{}, Unmatched: []Unmatched{}}
	winner := map[string]policy.Grant{}
	for _, g := range granted {
		winner[g.File] = g
	}
	matched := map[string]bool{}
	for _, g := range slices.Concat(granted, shadowed) {
		matched[g.Binding] = true
	}
	for _, g := range shadowed {
		if !authz.InScope(r.p, g.Secret) {
			continue
		}
		sg := ShadowedGrant{Grant: g}
		if w := winner[g.File]; authz.InScope(r.p, w.Secret) {
			sg.By = w.Binding
		}
		ex.Shadowed = append(ex.Shadowed, sg)
	}
	type miss struct {
		Unmatched
		stage int
	}
	var misses []miss
	for _, b := range set.Bindings() {
		if matched[b.Name] || !authz.InScope(r.p, b.Secret) {
			continue
		}
		stage, reason := whyNot(b, t)
		misses = append(misses, miss{Unmatched{Binding: b.Name, Secret: b.Secret, Reason: reason}, stage})
	}
	// Near misses first: a binding whose selector matches but whose image
	// or hosts do not is the likely answer to "why not".
	slices.SortStableFunc(misses, func(a, b miss) int { return cmp.Compare(b.stage, a.stage) })
	ex.UnmatchedTotal = len(misses)
	for i, m := range misses {
		if i == MaxUnmatched {
			break
		}
		ex.Unmatched = append(ex.Unmatched, m.Unmatched)
	}
	return http.StatusOK, ex, nil
}

// Stages at which whyNot finds a binding fails.
const (
	failSelector = iota
	failImage
	failHosts
	failOther
)

// whyNot says why binding b does not match t, and at which stage, checking
// the selector's requirements one by one, then the image pattern, then the
// host selector, as policy.Set.Match does.
func whyNot(b policy.Binding, t policy.Target) (int, string) {
	if sel, err := policy.ParseSelector(b.Selector); err == nil {
		reqs, _ := sel.Requirements()
		own := labels.Set{}
		for k, v := range t.Labels {
			if !strings.HasPrefix(k, policy.ImageLabelPrefix) { // ignored by every binding
				own[k] = v
			}
		}
		for _, req := range reqs {
			if key, ok := strings.CutPrefix(req.Key(), policy.ImageLabelPrefix); ok {
				ir, err := labels.NewRequirement(key, req.Operator(), req.ValuesUnsorted())
				if err != nil || !ir.Matches(labels.Set(t.ImageLabels)) {
					return failSelector, fmt.Sprintf("selector: %s is not met: %s", req.String(), has("the image", key, t.ImageLabels))
				}
				continue
			}
			if !req.Matches(own) {
				return failSelector, fmt.Sprintf("selector: %s is not met: %s", req.String(), has("the container", req.Key(), own))
			}
		}
	}
	if b.Image != "" {
		if p, err := policy.ParseImagePattern(b.Image); err == nil && !p.Match(t.Image, t.ImageDigest) {
			img := t.Image
			if t.ImageDigest != "" {
				img = strings.TrimSpace(img + " (" + t.ImageDigest + ")")
			}
			if img == "" {
				return failImage, fmt.Sprintf("image: the binding needs an image matching %s; none was given", b.Image)
			}
			return failImage, fmt.Sprintf("image: %s does not match %s", img, b.Image)
		}
	}
	if b.Hosts != "" {
		if sel, err := policy.ParseSelector(b.Hosts); err == nil {
			reqs, _ := sel.Requirements()
			for _, req := range reqs {
				if !req.Matches(labels.Set(t.HostLabels)) {
					return failHosts, fmt.Sprintf("hosts: %s is not met: %s", req.String(), has("the host", req.Key(), t.HostLabels))
				}
			}
		}
	}
	return failOther, "does not match"
}

// has describes what whose labels say of key.
func has(whose, key string, ls map[string]string) string {
	if v, ok := ls[key]; ok {
		return fmt.Sprintf("%s has %s=%s", whose, key, v)
	}
	if len(ls) == 0 {
		return whose + " has no labels"
	}
	return fmt.Sprintf("%s has no label %s", whose, key)
}
