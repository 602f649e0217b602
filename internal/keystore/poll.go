package keystore

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Poller runs Check for one upstream's linked items every Interval, and at
// once when the upstream hints at a change (Hinter), and reports each item
// whose state changed: a new version, an error that appeared or cleared,
// or an error of another kind. What to do with a change is the caller's:
// read the new value on a new version, revoke on a Gone error, mark the
// link degraded (keeping the last value) on any other error.
type Poller struct {
	Keystore Keystore
	Interval time.Duration
	// Items returns the items linked to this upstream now.
	Items func() []string
	// OnChange is called, from Run's goroutine, for every item whose state
	// differs from the last one reported (the first Check reports all).
	OnChange func(item string, st State)
	Logger   *slog.Logger

	last map[string]State
}

// Run polls until ctx ends, then returns ctx's error.
func (p *Poller) Run(ctx context.Context) error {
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	var hints <-chan []string
	if h, ok := p.Keystore.(Hinter); ok {
		hints = h.Hints()
	}
	p.last = map[string]State{}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	p.poll(ctx, nil, log)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			p.poll(ctx, nil, log)
		case items, ok := <-hints:
			if !ok {
				hints = nil
				continue
			}
			p.poll(ctx, items, log)
		}
	}
}

// poll checks the linked items among only, or all linked items.
func (p *Poller) poll(ctx context.Context, only []string, log *slog.Logger) {
	items := p.Items()
	if len(only) == 0 {
		linked := make(map[string]bool, len(items))
		for _, it := range items {
			linked[it] = true
		}
		for it := range p.last { // forget unlinked items
			if !linked[it] {
				delete(p.last, it)
			}
		}
	} else {
		want := map[string]bool{}
		for _, it := range only {
			want[it] = true
		}
		var sub []string
		for _, it := range items {
			if want[it] {
				sub = append(sub, it)
			}
		}
		items = sub
	}
	if len(items) == 0 {
		return
	}
	states, err := p.Keystore.Check(ctx, items)
	if ctx.Err() != nil {
		return // shutting down: not a state of the upstream
	}
	if err != nil {
		log.Warn("keystore check failed", "err", err, "items", len(items))
		states = make(map[string]State, len(items))
		for _, it := range items {
			states[it] = State{Err: err}
		}
	}
	for _, it := range items {
		st, ok := states[it]
		if !ok {
			continue
		}
		if prev, seen := p.last[it]; seen && sameState(prev, st) {
			continue
		}
		p.last[it] = st
		p.OnChange(it, st)
	}
}

// Kind returns the sentinel an error wraps (nil for nil, ErrUnreachable for
// an error that wraps none).
func Kind(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range []error{ErrNotFound, ErrDisabled, ErrAccessLost, ErrNoKey, ErrTooLarge, ErrInvalidRef, ErrUnreachable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return ErrUnreachable
}

func sameState(a, b State) bool { return a.Version == b.Version && Kind(a.Err) == Kind(b.Err) }
