package api

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// throttle slows down repeated authentication failures. Failures count per
// network, not per address (an IPv4 /24, an IPv6 /64: what one party
// usually holds), so that hopping between its own addresses gains an
// attacker nothing: after max failures within window, the network is
// refused (429) until window has passed since its last failure.
//
// The table of networks is bounded. When it is full, a new network takes
// the place of the one whose last failure is oldest among those not
// refused; refused networks are never evicted, they only expire. So a spray
// of failures from many networks cannot reset the count of the network
// being refused. While the table is full, every failure from a network not
// in it also counts in one global bucket: past globalMax within window,
// networks not in the table are refused too, except those that
// authenticated successfully recently (up to goodCap of them), so that
// operators keep working during a spray.
type throttle struct {
	max       int
	window    time.Duration
	cap       int // most networks tracked
	globalMax int // failures per window from networks not in a full table
	goodCap   int // most networks remembered as recently authenticated
	now       func() time.Time

	mu       sync.Mutex
	nets     map[string]*list.Element // of *failures, in open or refused
	open     list.List                // networks not (yet) refused, most recent failure first
	refused  list.List                // refused networks, most recent failure first
	overflow failures                 // the global bucket
	good     map[string]*list.Element // of string, in goodList
	goodList list.List                // most recently authenticated first
}

type failures struct {
	key  string
	n    int
	last time.Time
}

func newThrottle(max int, window time.Duration) *throttle {
	return &throttle{
		max: max, window: window, cap: 10_000, globalMax: 20 * max, goodCap: 1024, now: time.Now,
		nets: map[string]*list.Element{}, good: map[string]*list.Element{},
	}
}

// network is the bucket of a source address: its /24 (IPv4, IPv4-mapped
// IPv6 included) or /64 (IPv6). A source that is not an address is its own
// bucket.
func network(src string) string {
	a, err := netip.ParseAddr(src)
	if err != nil {
		return "?" + src
	}
	a = a.Unmap().WithZone("")
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

// blocked returns how long src must still wait, or 0.
func (t *throttle) blocked(src string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.expire(now)
	k := network(src)
	if el := t.nets[k]; el != nil {
		f := el.Value.(*failures)
		if f.n < t.max {
			return 0
		}
		return t.window - now.Sub(f.last)
	}
	if t.overflow.n >= t.globalMax && t.good[k] == nil {
		return t.window - now.Sub(t.overflow.last)
	}
	return 0
}

// fail counts an authentication failure from src.
func (t *throttle) fail(src string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.expire(now)
	k := network(src)
	if el := t.nets[k]; el != nil {
		f := el.Value.(*failures)
		f.n++
		f.last = now
		if f.n >= t.max {
			t.open.Remove(el)
			t.refused.Remove(el) // no-op unless already refused
			t.nets[k] = t.refused.PushFront(f)
		} else {
			t.open.MoveToFront(el)
		}
		return
	}
	if len(t.nets) >= t.cap {
		t.overflow.n++
		t.overflow.last = now
		victim := t.open.Back()
		if victim == nil {
			return // every tracked network is refused: only the global bucket counts this one
		}
		delete(t.nets, t.open.Remove(victim).(*failures).key)
	}
	f := &failures{key: k, n: 1, last: now}
	if f.n >= t.max {
		t.nets[k] = t.refused.PushFront(f)
	} else {
		t.nets[k] = t.open.PushFront(f)
	}
}

// ok notes that src authenticated successfully: its network is not refused
// by the global bucket (its own count still applies).
func (t *throttle) ok(src string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := network(src)
	if el := t.good[k]; el != nil {
		t.goodList.MoveToFront(el)
		return
	}
	if len(t.good) >= t.goodCap {
		delete(t.good, t.goodList.Remove(t.goodList.Back()).(string))
	}
	t.good[k] = t.goodList.PushFront(k)
}

// expire drops the networks, and resets the global bucket, whose last
// failure is a window old.
func (t *throttle) expire(now time.Time) {
	for _, l := range []*list.List{&t.open, &t.refused} {
		for el := l.Back(); el != nil; el = l.Back() {
			f := el.Value.(*failures)
			if now.Sub(f.last) < t.window {
				break
			}
			l.Remove(el)
			delete(t.nets, f.key)
		}
	}
	if now.Sub(t.overflow.last) >= t.window {
		t.overflow = failures{}
	}
}
