package api

import (
	"sync"
	"time"
)

// throttle slows down repeated authentication failures from one source:
// after max failures within window, that source is refused (429) until the
// window has passed since its last failure.
type throttle struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

func newThrottle(max int, window time.Duration) *throttle {
	return &throttle{max: max, window: window, now: time.Now, seen: map[string]*failures{}}
}

// blocked returns how long src must still wait, or 0.
func (t *throttle) blocked(src string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.seen[src]
	if f == nil {
		return 0
	}
	since := t.now().Sub(f.last)
	if since >= t.window {
		delete(t.seen, src)
		return 0
	}
	if f.n < t.max {
		return 0
	}
	return t.window - since
}

func (t *throttle) fail(src string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.seen) > 100_000 { // bound memory under a spray of sources
		clear(t.seen)
	}
	f := t.seen[src]
	if f == nil {
		f = &failures{}
		t.seen[src] = f
	}
	f.n++
	f.last = t.now()
}
