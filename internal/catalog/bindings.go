package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"

	"coffer/internal/policy"
	"coffer/internal/secret"
	"coffer/internal/store"
)

// Binding is a policy binding as the catalog keeps it: the binding, and
// who manages it. ManagedBy is set by declarative tools (coffer apply) so
// that they prune only what they made; it plays no part in matching.
type Binding struct {
	policy.Binding
	ManagedBy string `json:"managed_by,omitempty"`
}

// Normalize normalizes the policy binding (policy.Binding.Normalize) and
// checks ManagedBy: empty, or a label value (at most 63 letters, digits,
// '-', '_', '.', starting and ending with a letter or digit). On error b
// is left unchanged.
func (b *Binding) Normalize() error {
	if b.ManagedBy != "" {
		if errs := validation.IsValidLabelValue(b.ManagedBy); len(errs) > 0 {
			return fmt.Errorf("%w %q: managed_by %q: %s", policy.ErrInvalid, b.Name, b.ManagedBy, errs[0])
		}
	}
	return b.Binding.Normalize()
}

func bindingKey(name string) string { return "binding/" + name }

func (c *Catalog) loadBindings(ctx context.Context) error {
	var bs []policy.Binding
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("binding/", func(k string, v []byte) error {
			var b policy.Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			bs = append(bs, b)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load bindings: %w", err)
	}
	set, err := policy.NewSet(bs)
	if err != nil {
		return fmt.Errorf("load bindings: %w", err)
	}
	c.bindings = set
	return nil
}

// Bindings returns the current compiled set of bindings (immutable).
func (c *Catalog) Bindings() *policy.Set {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bindings
}

// Check decides, inside the transaction that writes a binding, whether the
// write may go ahead, given the binding it replaces or deletes (nil: none).
// Its error is returned as is.
type Check func(prev *Binding) error

// MustNotExist is the Check of a create-only write: ErrConflict if a
// binding of that name exists.
func MustNotExist(name string) Check {
	return func(prev *Binding) error {
		if prev != nil {
			return fmt.Errorf("binding %s: %w: it already exists", name, ErrConflict)
		}
		return nil
	}
}

// MustExist is the Check of a replace-only write: ErrNotFound if there is
// no binding of that name.
func MustExist(name string) Check {
	return func(prev *Binding) error {
		if prev == nil {
			return fmt.Errorf("binding %s: %w", name, ErrNotFound)
		}
		return nil
	}
}

// All combines checks: the first error wins.
func All(checks ...Check) Check {
	return func(prev *Binding) error {
		for _, ch := range checks {
			if ch == nil {
				continue
			}
			if err := ch(prev); err != nil {
				return err
			}
		}
		return nil
	}
}

// PutBinding creates or replaces a binding after normalizing it.
func (c *Catalog) PutBinding(ctx context.Context, b Binding) (Binding, error) {
	r, err := c.PutBindingIf(ctx, b, nil, false)
	if err != nil {
		return Binding{}, err
	}
	return *r.After, nil
}

// BindingChange is one binding's change: Before is nil for a creation,
// After nil for a deletion.
type BindingChange struct {
	Before *Binding `json:"before"`
	After  *Binding `json:"after"`
}

// BindingResult is what a binding write did: the change, and the set of
// bindings it makes (the current one after a real write, the would-be one
// after a dry run).
type BindingResult struct {
	BindingChange
	Set *policy.Set
}

// PutBindingIf creates or replaces a binding after normalizing it, if
// check (nil: any) allows it, atomically with the write. A dry run checks
// everything and stores nothing.
func (c *Catalog) PutBindingIf(ctx context.Context, b Binding, check Check, dryRun bool) (BindingResult, error) {
	if err := b.Normalize(); err != nil {
		return BindingResult{}, err
	}
	c.mu.Lock()
	set, err := c.bindings.With(b.Binding)
	var prev *Binding
	if err == nil {
		err = c.update(ctx, dryRun, func(tx store.Tx) error {
			var err error
			if prev, err = getBinding(tx, b.Name); err != nil {
				return err
			}
			if check != nil {
				if err := check(prev); err != nil {
					return err
				}
			}
			return putJSON(tx, bindingKey(b.Name), b)
		})
	}
	if err != nil {
		c.mu.Unlock()
		return BindingResult{}, err
	}
	if !dryRun {
		c.bindings = set
	}
	c.mu.Unlock()
	r := BindingResult{BindingChange: BindingChange{Before: prev, After: &b}, Set: set}
	if !dryRun {
		c.log.Info("binding stored", "binding", b.Name, "secret", b.Secret, "selector", b.Selector)
		c.notify(Change{Kind: BindingPut, Binding: b.Name, Secret: b.Secret})
	}
	return r, nil
}

// getBinding reads a binding in tx; nil if there is none.
func getBinding(tx store.Tx, name string) (*Binding, error) {
	var b Binding
	err := getJSON(tx, bindingKey(name), &b)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// GetBinding returns one binding.
func (c *Catalog) GetBinding(ctx context.Context, name string) (Binding, error) {
	if err := secret.ValidateName(name); err != nil {
		return Binding{}, err
	}
	var b *Binding
	err := c.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		b, err = getBinding(tx, name)
		return err
	})
	if err != nil {
		return Binding{}, err
	}
	if b == nil {
		return Binding{}, fmt.Errorf("binding %s: %w", name, ErrNotFound)
	}
	return *b, nil
}

// ListBindings returns all bindings in name order.
func (c *Catalog) ListBindings(ctx context.Context) ([]Binding, error) {
	out := []Binding{}
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("binding/", func(k string, v []byte) error {
			var b Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// DeleteBinding removes a binding; containers it served lose the file.
func (c *Catalog) DeleteBinding(ctx context.Context, name string) error {
	_, err := c.DeleteBindingIf(ctx, name, nil, false)
	return err
}

// DeleteBindingIf removes a binding if check (nil: any) allows it,
// atomically with the removal; ErrNotFound if there is none. A dry run
// checks and removes nothing.
func (c *Catalog) DeleteBindingIf(ctx context.Context, name string, check Check, dryRun bool) (BindingResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return BindingResult{}, err
	}
	c.mu.Lock()
	var prev *Binding
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		var err error
		if prev, err = getBinding(tx, name); err != nil {
			return err
		}
		if check != nil {
			if err := check(prev); err != nil {
				return err
			}
		}
		if prev == nil {
			return fmt.Errorf("binding %s: %w", name, ErrNotFound)
		}
		return tx.Delete(bindingKey(name))
	})
	if err != nil {
		c.mu.Unlock()
		return BindingResult{}, err
	}
	set := c.bindings.Without(name)
	if !dryRun {
		c.bindings = set
	}
	c.mu.Unlock()
	if !dryRun {
		c.log.Info("binding deleted", "binding", name)
		c.notify(Change{Kind: BindingDeleted, Binding: name, Secret: prev.Secret})
	}
	return BindingResult{BindingChange: BindingChange{Before: prev}, Set: set}, nil
}
