package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"coffer/internal/policy"
	"coffer/internal/secret"
	"coffer/internal/store"
)

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

// PutBinding creates or replaces a binding after normalizing it.
func (c *Catalog) PutBinding(ctx context.Context, b policy.Binding) (policy.Binding, error) {
	if err := b.Normalize(); err != nil {
		return policy.Binding{}, err
	}
	c.mu.Lock()
	set, err := c.bindings.With(b)
	if err == nil {
		err = c.cfg.Store.Update(ctx, func(tx store.Tx) error { return putJSON(tx, bindingKey(b.Name), b) })
	}
	if err != nil {
		c.mu.Unlock()
		return policy.Binding{}, err
	}
	c.bindings = set
	c.mu.Unlock()
	c.log.Info("binding stored", "binding", b.Name, "secret", b.Secret, "selector", b.Selector)
	c.notify(Change{Kind: BindingPut, Binding: b.Name, Secret: b.Secret})
	return b, nil
}

// GetBinding returns one binding.
func (c *Catalog) GetBinding(ctx context.Context, name string) (policy.Binding, error) {
	if err := secret.ValidateName(name); err != nil {
		return policy.Binding{}, err
	}
	var b policy.Binding
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error { return getJSON(tx, bindingKey(name), &b) })
	if errors.Is(err, store.ErrNotFound) {
		return b, fmt.Errorf("binding %s: %w", name, ErrNotFound)
	}
	return b, err
}

// ListBindings returns all bindings in name order.
func (c *Catalog) ListBindings(ctx context.Context) ([]policy.Binding, error) {
	out := []policy.Binding{}
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("binding/", func(_ string, v []byte) error {
			var b policy.Binding
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// DeleteBinding removes a binding; containers it served lose the file.
func (c *Catalog) DeleteBinding(ctx context.Context, name string) error {
	b, err := c.GetBinding(ctx, name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if err := c.cfg.Store.Update(ctx, func(tx store.Tx) error { return tx.Delete(bindingKey(name)) }); err != nil {
		c.mu.Unlock()
		return err
	}
	c.bindings = c.bindings.Without(name)
	c.mu.Unlock()
	c.log.Info("binding deleted", "binding", name)
	c.notify(Change{Kind: BindingDeleted, Binding: name, Secret: b.Secret})
	return nil
}
