package keystore

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Poller runs Check for one upstream's linked items every Interval, and at
// once when the upstream hints at a change (Hinter), and reports each item
// whose state changed: a new version, an error that appeared or cleared,
// or an error of another kind. What to do with a change is the caller's:
// read the new value on a new version, revoke on a Gone error, mark the
// link degraded (keeping the last value) on any other error.
//
// It never storms an upstream: polls are spread by a jitter of up to a
// tenth of Interval; after a Check that fails as a whole the next one
// waits twice as long each time (with jitter, up to MaxBackoff); and hints
// are coalesced so that they cause at most one Check per HintGap.
type Poller struct {
	Keystore Keystore
	Interval time.Duration
	// MaxBackoff caps the wait after failed Checks; zero means eight
	// Intervals, at most DefaultMaxBackoff (never less than Interval): an
	// upstream back from an outage is noticed within that.
	MaxBackoff time.Duration
	// HintGap is the least time between two Checks caused by hints (each
	// checks only the hinted items); zero means DefaultHintGap.
	HintGap time.Duration
	// Items returns the items linked to this upstream now.
	Items func() []string
	// OnChange is called, from Run's goroutine, for every item whose state
	// differs from the last one reported (the first Check reports all).
	OnChange func(item string, st State)
	// Stale, if set, is asked about every item whose state did not change:
	// true reports it again (the caller could not act on the last report,
	// e.g. its store failed, and wants to retry).
	Stale func(item string, st State) bool
	// OnCheck, if set, is called after every Check with its whole-Check
	// error (nil when the upstream answered).
	OnCheck func(err error)
	Logger  *slog.Logger

	last     map[string]State
	failures int
}

// Defaults of a Poller.
const (
	DefaultMaxBackoff = 30 * time.Second
	DefaultHintGap    = 100 * time.Millisecond
)

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
	gap := p.HintGap
	if gap <= 0 {
		gap = DefaultHintGap
	}
	p.last = map[string]State{}
	p.failures = 0
	p.poll(ctx, nil, log)
	next := time.NewTimer(p.delay())
	defer next.Stop()
	var (
		pending   map[string]bool // hinted items waiting for the gap; empty map: all
		hintTimer <-chan time.Time
		lastHint  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-next.C:
			// The period runs from the start of a Check: a Check of many
			// items that takes a while does not stretch it.
			started := time.Now()
			p.poll(ctx, nil, log)
			pending, hintTimer = nil, nil
			next.Reset(max(0, p.delay()-time.Since(started)))
		case items, ok := <-hints:
			if !ok {
				hints = nil
				continue
			}
			if pending == nil {
				pending = map[string]bool{}
			}
			if len(items) == 0 {
				pending[""] = true // all
			}
			for _, it := range items {
				pending[it] = true
			}
			if hintTimer == nil {
				hintTimer = time.After(max(0, gap-time.Since(lastHint)))
			}
		case <-hintTimer:
			var only []string
			if !pending[""] {
				for it := range pending {
					only = append(only, it)
				}
			}
			lastHint, pending, hintTimer = time.Now(), nil, nil
			p.poll(ctx, only, log)
		}
	}
}

// delay is the wait before the next scheduled Check: Interval with up to
// a tenth of jitter, or a jittered exponential backoff after failures.
func (p *Poller) delay() time.Duration {
	d := p.Interval
	if p.failures > 0 {
		limit := p.MaxBackoff
		if limit <= 0 {
			limit = min(8*p.Interval, DefaultMaxBackoff)
		}
		limit = max(limit, p.Interval)
		for i := 0; i < p.failures && d < limit; i++ {
			d *= 2
		}
		d = min(d, limit)
		return d/2 + rand.N(d/2+1) // full jitter over the upper half
	}
	return d - rand.N(d/10+1)
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
	if len(only) == 0 {
		if err != nil {
			p.failures++
		} else {
			p.failures = 0
		}
	}
	if p.OnCheck != nil {
		p.OnCheck(err)
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
		if prev, seen := p.last[it]; seen && sameState(prev, st) && (p.Stale == nil || !p.Stale(it, st)) {
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
