package catalog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"coffer/internal/seal"
	"coffer/internal/secret"
	"coffer/internal/store"
	"coffer/internal/tmpl"
)

// Template makes a secret templated: its value is rendered, on the server
// and in memory only, from a text/template over other secrets (package
// tmpl), whenever an agent is sent it. Nothing rendered is stored: a
// templated version records the version of every input it was rendered
// from, and a change to any input makes a new version (the broker then
// rolls it out like any rotation).
type Template struct {
	Source string   `json:"source"`
	Inputs []string `json:"inputs"` // the secrets it reads, sorted
	// Broken, when set, says why the template cannot be rendered now (an
	// input was deleted or revoked): it is then in no container until
	// the input is back.
	Broken string `json:"broken,omitempty"`
}

func templatedErr(meta SecretMeta, what string) error {
	return fmt.Errorf("%w: secret %s is templated (rendered from %d other secrets): %s; change its template with coffer secret template",
		ErrConflict, meta.Name, len(meta.Template.Inputs), what)
}

// PutTemplate makes name a templated secret rendering src, written by
// author: a new secret or a new version of a templated one. Every input
// must be a live, deliverable secret that is not templated itself, and
// allowed (the caller's scope) must accept it; the template is rendered
// once to check it (size cap, binary values). A stored or linked secret,
// or a deleted one, is refused (ErrConflict). A dry run stores nothing.
func (c *Catalog) PutTemplate(ctx context.Context, name, src, author string, allowed func(input string) error, dryRun bool) (PutResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return PutResult{}, err
	}
	t, err := tmpl.Parse(src)
	if err != nil {
		return PutResult{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	for _, in := range t.Inputs() {
		if in == name {
			return PutResult{}, fmt.Errorf("%w: the template reads itself (%s)", ErrInvalid, name)
		}
		if allowed != nil {
			if err := allowed(in); err != nil {
				return PutResult{}, fmt.Errorf("%w: input %s: %v", ErrInvalid, in, err)
			}
		}
	}
	var r PutResult
	now := c.now()
	err = c.update(ctx, dryRun, func(tx store.Tx) error {
		r = PutResult{}
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		r.Was = state
		switch {
		case state == Deleted:
			return fmt.Errorf("%w: secret %s was deleted; undelete or purge it first", ErrConflict, name)
		case state == Live && meta.Template == nil:
			return fmt.Errorf("%w: secret %s has values of its own (stored or linked); purge it before making the name a template", ErrConflict, name)
		case state == Absent:
			meta = SecretMeta{Name: name, Current: meta.Current, Created: now}
		}
		inputs, err := c.inputVersions(tx, t.Inputs())
		if err != nil {
			return err
		}
		if err := c.tryRender(ctx, tx, t, inputs); err != nil {
			return err
		}
		meta.Template = &Template{Source: src, Inputs: t.Inputs()}
		c.addTemplatedVersion(&meta, inputs, author, now)
		r.SecretMeta = meta
		return putJSON(tx, secretKey(name), meta)
	})
	if err != nil {
		return PutResult{}, fmt.Errorf("template secret %s: %w", name, err)
	}
	if dryRun {
		return r, nil
	}
	c.indexTemplate(name, r.Template.Inputs)
	c.log.Info("templated secret stored", "secret", name, "version", r.Current, "inputs", len(r.Template.Inputs), "author", author)
	c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	return r, nil
}

// inputVersions returns the current version of each input, which must be
// live, deliverable and not templated.
func (c *Catalog) inputVersions(tx store.Tx, inputs []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(inputs))
	for _, in := range inputs {
		m, state, err := c.load(tx, in, false)
		if err != nil {
			return nil, err
		}
		switch {
		case state != Live:
			return nil, fmt.Errorf("%w: the template reads secret %s, which does not exist (or is deleted)", ErrInvalid, in)
		case m.Template != nil:
			return nil, fmt.Errorf("%w: the template reads secret %s, which is templated itself (templates do not nest)", ErrInvalid, in)
		case m.Link != nil && m.Link.Revoked != "", len(m.Versions) > 0 && m.Versions[0].Revoked != "":
			return nil, fmt.Errorf("%w: the template reads secret %s, whose current version is revoked", ErrInvalid, in)
		}
		out[in] = m.Current
	}
	return out, nil
}

// tryRender renders t from inputs and throws the result away.
func (c *Catalog) tryRender(ctx context.Context, tx store.Tx, t *tmpl.Template, inputs map[string]uint64) error {
	v, err := c.render(ctx, tx, t, inputs)
	v.Zero()
	return err
}

func (c *Catalog) render(ctx context.Context, tx store.Tx, t *tmpl.Template, inputs map[string]uint64) (secret.Value, error) {
	values := make(map[string]secret.Value, len(inputs))
	defer func() {
		for _, v := range values {
			v.Zero()
		}
	}()
	for in, ver := range inputs {
		var env seal.Envelope
		if err := getJSON(tx, versionKey(in, ver), &env); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, fmt.Errorf("%w: input %s version %d is no longer kept", ErrGone, in, ver)
			}
			return nil, err
		}
		pt, err := seal.Open(ctx, c.cfg.Key, env, seal.AAD(in, ver))
		if err != nil {
			return nil, fmt.Errorf("open input %s version %d: %w", in, ver, err)
		}
		values[in] = secret.Value(pt)
	}
	out, err := t.Render(values, c.cfg.MaxValueSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return out, nil
}

func (c *Catalog) addTemplatedVersion(meta *SecretMeta, inputs map[string]uint64, author string, now time.Time) {
	meta.Current++
	meta.Updated = now
	meta.Template.Broken = ""
	meta.Versions = append([]VersionMeta{{Version: meta.Current, Created: now, Author: author, Inputs: inputs}}, meta.Versions...)
	if len(meta.Versions) > c.cfg.MaxVersions {
		meta.Versions = meta.Versions[:c.cfg.MaxVersions]
	}
}

// renderTemplated opens version v of the templated secret meta: rendered
// now from the input versions it records.
func (c *Catalog) renderTemplated(ctx context.Context, tx store.Tx, meta SecretMeta, v uint64) (secret.Value, error) {
	i := slices.IndexFunc(meta.Versions, func(vm VersionMeta) bool { return vm.Version == v })
	if i < 0 {
		return nil, fmt.Errorf("secret %s version %d: %w", meta.Name, v, ErrNotFound)
	}
	t, err := tmpl.Parse(meta.Template.Source)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w: %w", meta.Name, store.ErrCorrupt, err)
	}
	return c.render(ctx, tx, t, meta.Versions[i].Inputs)
}

// followTemplates gives every templated secret that reads the secret ch
// names a new version (or marks it broken if that secret is gone). It runs
// after the change is committed and told.
func (c *Catalog) followTemplates(ctx context.Context, ch Change) {
	if ch.Kind != SecretPut && ch.Kind != SecretDeleted {
		return
	}
	for _, t := range c.dependents(ctx, ch.Secret) {
		var out Change
		now := c.now()
		err := c.update(ctx, false, func(tx store.Tx) error {
			out = Change{}
			meta, state, err := c.load(tx, t, true)
			if err != nil || state != Live || meta.Template == nil || !slices.Contains(meta.Template.Inputs, ch.Secret) {
				return err
			}
			inputs, err := c.inputVersions(tx, meta.Template.Inputs)
			if err != nil {
				if meta.Template.Broken != "" {
					return nil
				}
				meta.Template.Broken = err.Error()
				meta.Updated = now
				out = Change{Kind: SecretDeleted, Secret: t}
				return putJSON(tx, secretKey(t), meta)
			}
			if meta.Template.Broken == "" && len(meta.Versions) > 0 && maps.Equal(meta.Versions[0].Inputs, inputs) {
				return nil
			}
			c.addTemplatedVersion(&meta, inputs, "template:"+ch.Secret, now)
			out = Change{Kind: SecretPut, Secret: t, Version: meta.Current}
			return putJSON(tx, secretKey(t), meta)
		})
		if err != nil {
			c.log.Error("following a template's input", "secret", t, "input", ch.Secret, "err", err)
			continue
		}
		if out.Kind != 0 {
			c.log.Info("templated secret follows its input", "secret", t, "input", ch.Secret, "version", out.Version, "broken", out.Kind == SecretDeleted)
			if c.cfg.OnChange != nil {
				c.cfg.OnChange(out)
			}
		}
	}
}

// dependents lists the templated secrets that may read input (the index
// may hold some that no longer do: followTemplates checks each).
func (c *Catalog) dependents(_ context.Context, input string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Sorted(maps.Keys(c.tdeps[input]))
}

// indexTemplate records that the templated secret name reads inputs.
func (c *Catalog) indexTemplate(name string, inputs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tdeps == nil {
		c.tdeps = map[string]map[string]bool{}
	}
	for _, in := range inputs {
		if c.tdeps[in] == nil {
			c.tdeps[in] = map[string]bool{}
		}
		c.tdeps[in][name] = true
	}
}

// loadTemplates builds the index of templates by input at Open.
func (c *Catalog) loadTemplates(ctx context.Context) error {
	return c.cfg.Store.View(ctx, func(tx store.Tx) error {
		for _, key := range []string{secretKey(""), deletedKey("")} {
			err := tx.List(key, func(_ string, v []byte) error {
				var m SecretMeta
				if err := unmarshalMeta(v, &m); err != nil {
					return err
				}
				if m.Template != nil {
					c.indexTemplate(m.Name, m.Template.Inputs)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}
