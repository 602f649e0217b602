package keystore

import (
	"context"
	"fmt"
	"strings"
)

// Restrict returns ks limited to the items that match one of patterns: an
// exact item, or a prefix ending in '*' ("payments/*"). Items outside are
// refused by ValidateItem (so a link to them is a 400) and by Read and
// Check (defense in depth) with ErrInvalidRef. It keeps a principal who
// may link secrets from using Coffer's upstream credentials to reach items
// of other teams (a confused deputy). No patterns: ks itself.
func Restrict(ks Keystore, name string, patterns []string) Keystore {
	if len(patterns) == 0 {
		return ks
	}
	r := &restricted{Keystore: ks, name: name, patterns: patterns}
	if h, ok := ks.(Hinter); ok {
		return &restrictedHinter{restricted: r, h: h}
	}
	return r
}

// ValidatePatterns checks allow patterns: non-empty, '*' only at the end.
func ValidatePatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" || strings.Contains(strings.TrimSuffix(p, "*"), "*") || strings.Contains(p, "#") {
			return fmt.Errorf("allow pattern %q: want an item, or a prefix ending in '*' (e.g. payments/*)", p)
		}
	}
	return nil
}

type restricted struct {
	Keystore
	name     string
	patterns []string
}

type restrictedHinter struct {
	*restricted
	h Hinter
}

func (r *restrictedHinter) Hints() <-chan []string { return r.h.Hints() }

func (r *restricted) allowed(item string) bool {
	for _, p := range r.patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(item, prefix) || p == item {
			return true
		}
	}
	return false
}

func (r *restricted) refuse(item string) error {
	return &Error{Upstream: r.name, Item: item, Err: fmt.Errorf("%w: item is outside this upstream's allow list (%s)",
		ErrInvalidRef, strings.Join(r.patterns, ", "))}
}

func (r *restricted) ValidateItem(item string) error {
	if !r.allowed(item) {
		return r.refuse(item)
	}
	return r.Keystore.ValidateItem(item)
}

func (r *restricted) Read(ctx context.Context, item string) (Item, error) {
	if !r.allowed(item) {
		return Item{}, r.refuse(item)
	}
	return r.Keystore.Read(ctx, item)
}

func (r *restricted) Check(ctx context.Context, items []string) (map[string]State, error) {
	var ok []string
	out := map[string]State{}
	for _, it := range items {
		if r.allowed(it) {
			ok = append(ok, it)
		} else {
			out[it] = State{Err: r.refuse(it)}
		}
	}
	st, err := r.Keystore.Check(ctx, ok)
	if err != nil {
		return nil, err
	}
	for it, s := range st {
		out[it] = s
	}
	return out, nil
}
