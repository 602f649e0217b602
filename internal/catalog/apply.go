package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"coffer/internal/policy"
	"coffer/internal/store"
)

// DefaultOwner is the ownership marker of coffer apply when none is given.
const DefaultOwner = "coffer-apply"

// ApplyRequest is a declarative set of bindings (coffer apply).
type ApplyRequest struct {
	Bindings []Binding // wanted; names unique
	// Owner is the ownership marker: the ManagedBy of the bindings this
	// apply creates, and what Prune looks for. A wanted binding with its
	// own ManagedBy keeps it; one without keeps the ManagedBy of the
	// binding it replaces (so that applying what Export printed changes
	// nothing), or gets Owner if it is new.
	Owner string
	// Prune deletes the bindings whose ManagedBy is Owner, that are not
	// wanted and that Visible lets the caller see.
	Prune   bool
	Visible func(Binding) bool // nil: every binding
	// Check decides whether the caller may make each change (prev nil for
	// a creation, next nil for a deletion); nil: every change.
	Check  func(prev, next *Binding) error
	DryRun bool
}

// ApplyResult is what an apply did, or would do for a dry run.
type ApplyResult struct {
	Created   []Binding
	Updated   []BindingChange
	Deleted   []Binding
	Unchanged []string
	Set       *policy.Set // the bindings after it
}

// ValidateOwner checks an ownership marker: a label value, not empty.
func ValidateOwner(owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: owner: empty", ErrInvalid)
	}
	if errs := validation.IsValidLabelValue(owner); len(errs) > 0 {
		return fmt.Errorf("%w: owner %q: %s", ErrInvalid, owner, errs[0])
	}
	return nil
}

// ApplyBindings makes the bindings what req says, in one transaction: all
// of it or nothing. Changes are notified one binding at a time.
func (c *Catalog) ApplyBindings(ctx context.Context, req ApplyRequest) (ApplyResult, error) {
	if err := ValidateOwner(req.Owner); err != nil {
		return ApplyResult{}, err
	}
	want := make([]Binding, len(req.Bindings))
	seen := map[string]bool{}
	for i, b := range req.Bindings {
		if err := b.Normalize(); err != nil {
			return ApplyResult{}, err
		}
		if seen[b.Name] {
			return ApplyResult{}, fmt.Errorf("%w %q: given twice", policy.ErrInvalid, b.Name)
		}
		seen[b.Name] = true
		want[i] = b
	}
	slices.SortFunc(want, func(a, b Binding) int { return strings.Compare(a.Name, b.Name) })

	var res ApplyResult
	c.mu.Lock()
	err := c.update(ctx, req.DryRun, func(tx store.Tx) error {
		res = ApplyResult{Set: c.bindings}
		live := map[string]Binding{}
		if err := tx.List("binding/", func(k string, v []byte) error {
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			live[b.Name] = b
			return nil
		}); err != nil {
			return err
		}
		for _, b := range want {
			var prev *Binding
			if p, ok := live[b.Name]; ok {
				prev = &p
			}
			if b.ManagedBy == "" {
				if prev != nil {
					b.ManagedBy = prev.ManagedBy
				} else {
					b.ManagedBy = req.Owner
				}
			}
			if prev != nil && *prev == b {
				res.Unchanged = append(res.Unchanged, b.Name)
				continue
			}
			if req.Check != nil {
				if err := req.Check(prev, &b); err != nil {
					return err
				}
			}
			set, err := res.Set.With(b.Binding)
			if err != nil {
				return err
			}
			res.Set = set
			if err := putJSON(tx, bindingKey(b.Name), b); err != nil {
				return err
			}
			if prev == nil {
				res.Created = append(res.Created, b)
			} else {
				after := b
				res.Updated = append(res.Updated, BindingChange{Before: prev, After: &after})
			}
		}
		if !req.Prune {
			return nil
		}
		for _, name := range slices.Sorted(maps.Keys(live)) {
			b := live[name]
			if seen[name] || b.ManagedBy != req.Owner || req.Visible != nil && !req.Visible(b) {
				continue
			}
			if req.Check != nil {
				if err := req.Check(&b, nil); err != nil {
					return err
				}
			}
			if err := tx.Delete(bindingKey(name)); err != nil {
				return err
			}
			res.Set = res.Set.Without(name)
			res.Deleted = append(res.Deleted, b)
		}
		return nil
	})
	if err != nil {
		c.mu.Unlock()
		return ApplyResult{}, err
	}
	if req.DryRun {
		c.mu.Unlock()
		return res, nil
	}
	c.bindings = res.Set
	c.mu.Unlock()
	c.log.Info("bindings applied", "owner", req.Owner, "created", len(res.Created), "updated", len(res.Updated),
		"deleted", len(res.Deleted), "unchanged", len(res.Unchanged))
	for _, b := range res.Created {
		c.notify(Change{Kind: BindingPut, Binding: b.Name, Secret: b.Secret})
	}
	for _, u := range res.Updated {
		c.notify(Change{Kind: BindingPut, Binding: u.After.Name, Secret: u.After.Secret})
	}
	for _, b := range res.Deleted {
		c.notify(Change{Kind: BindingDeleted, Binding: b.Name, Secret: b.Secret})
	}
	return res, nil
}
