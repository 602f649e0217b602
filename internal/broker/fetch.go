package broker

import (
	"context"
	"errors"
	"maps"
	"time"

	"coffer/internal/secret"
)

// The broker never reads the store while it holds b.mu. On a shared store
// (etcd) every read is a network round trip: a push that opened values
// under the lock serialized the first delivery of a whole fleet behind one
// round trip per distinct value (10,000 containers: p99 24.5 s, see
// docs/benchmarks.md section 10), and held up every other delivery,
// rotation and acknowledgement meanwhile.
//
// Instead push takes what the broker already has (cached current versions
// and values) and, for what it lacks, starts one fetch per secret or
// version (however many containers wait for it; singleflight) on a
// goroutine of its own and returns: the container keeps what it has until
// the answer comes. The fetch then takes the lock and pushes every
// container that waited for it again, from scratch: whatever changed
// meanwhile (a newer version, a removed binding, a stopped container) is
// what they get, never the state of when they began to wait.

// fetchTimeout bounds one store read of a fetch. A read that times out
// counts as the store being away: the waiting containers keep what they
// have, and Resync (run when the store is back) sends them their state.
const fetchTimeout = 30 * time.Second

// fetch is one store read in flight, and the containers waiting for it.
type fetch struct {
	waiters map[*ctr]struct{}
	// stale (current versions only): a newer answer came meanwhile
	// (setCurrent, Resync), so this one must not be kept.
	stale bool
}

// fetched is the answer of a value fetch while its waiters are pushed.
type fetched struct {
	val  secret.Value
	err  error
	used bool // a push queued it on a stream
}

// fetchState is the broker's memory of fetches; guarded by b.mu.
type fetchState struct {
	values  map[verKey]*fetch
	current map[string]*fetch
	fresh   map[verKey]*fetched // answers being pushed to their waiters
	// away are the containers whose fetch failed because the store was
	// away: StoreBack pushes them again, when the store's health check
	// sees it back or awayRetry after the failure, whichever is first.
	away           map[*ctr]struct{}
	retryScheduled bool // a StoreBack is scheduled
}

// awayRetry is how long after a read failed because the store was away
// its containers are pushed again (and so read again) if the store's
// health check has not said it is back: a read can time out while the
// store's pings pass.
const awayRetry = 2 * time.Second

// failedAway records that f's waiters could not be served because the
// store was away. Called under b.mu.
func (b *Broker) failedAway(f *fetch) {
	maps.Copy(b.fetches.away, f.waiters)
	if !b.fetches.retryScheduled {
		b.fetches.retryScheduled = true
		time.AfterFunc(awayRetry, b.StoreBack)
	}
}

func (f *fetchState) init() {
	f.values = map[verKey]*fetch{}
	f.current = map[string]*fetch{}
	f.fresh = map[verKey]*fetched{}
	f.away = map[*ctr]struct{}{}
}

// StoreBack pushes again the containers whose store reads failed while
// the store was away (a shared store's outage, or reads that timed out):
// they kept what they had and get their state now. Nothing else is read
// again: cached values are immutable versions, and the watch, which
// resumes where it stopped, keeps current versions up to date (a watch
// that lost history resets and calls Resync). So a store that was only
// slow to answer (a ping timing out under load) costs the reads that
// failed, not a fleet's worth.
func (b *Broker) StoreBack() {
	b.mu.Lock()
	away := b.fetches.away
	b.fetches.away = map[*ctr]struct{}{}
	b.fetches.retryScheduled = false
	b.pushAgain(away)
	b.mu.Unlock()
	b.backpressure()
}

// versionState is what the broker knows of a secret's current version.
type versionState int

const (
	versionKnown versionState = iota
	versionWait               // being fetched: c is pushed again when it comes
)

// versionOf returns name's current version as far as the broker knows it
// (0: none); when it does not, it starts fetching it for c. Called under
// b.mu.
func (b *Broker) versionOf(c *ctr, name string) (uint64, versionState) {
	if v, ok := b.current[name]; ok {
		return v, versionKnown
	}
	f := b.fetches.current[name]
	if f == nil {
		f = &fetch{waiters: map[*ctr]struct{}{}}
		b.fetches.current[name] = f
		go b.fetchCurrent(name, f)
	}
	f.waiters[c] = struct{}{}
	return 0, versionWait
}

// lookup returns version k's value if the broker has it (cached, or just
// fetched for the waiters being pushed): ready true, with the error of
// the fetch if it failed. Otherwise it starts fetching it for c. Called
// under b.mu.
func (b *Broker) lookup(c *ctr, k verKey) (v secret.Value, ready bool, err error) {
	if v, ok := b.values[k]; ok {
		return v, true, nil
	}
	if r := b.fetches.fresh[k]; r != nil {
		if r.err == nil {
			r.used = true
		}
		return r.val, true, r.err
	}
	f := b.fetches.values[k]
	if f == nil {
		f = &fetch{waiters: map[*ctr]struct{}{}}
		b.fetches.values[k] = f
		go b.fetchValue(k, f)
	}
	f.waiters[c] = struct{}{}
	return nil, false, nil
}

// prefetch starts fetching version k for the containers cs (a rotation:
// every container bound to the secret needs its new value) unless the
// broker has it, and reports whether it did: then they are pushed when it
// comes, instead of each computing its files now only to find the value
// missing. Called under b.mu.
func (b *Broker) prefetch(k verKey, cs map[*ctr]struct{}) bool {
	if _, ok := b.values[k]; ok || k.version == 0 || len(cs) == 0 || b.fetches.fresh[k] != nil {
		return false
	}
	if ls := b.cfg.Leases; ls != nil && ls.Dynamic(k.secret) {
		return false // each container has a value of its own
	}
	f := b.fetches.values[k]
	if f == nil {
		f = &fetch{waiters: map[*ctr]struct{}{}}
		b.fetches.values[k] = f
		go b.fetchValue(k, f)
	}
	for c := range cs {
		f.waiters[c] = struct{}{}
	}
	return true
}

// staleCurrent makes an in-flight fetch of name's current version (all of
// them for "") give nothing: a newer answer is known, or everything is to
// be read again. Its waiters are still pushed when it ends. Called under
// b.mu.
func (b *Broker) staleCurrent(name string) {
	for n, f := range b.fetches.current {
		if name == "" || n == name {
			f.stale = true
			delete(b.fetches.current, n)
		}
	}
}

// away reports an error after which the store's answer is unknown.
func away(err error) bool {
	return storeAway(err) || errors.Is(err, context.DeadlineExceeded)
}

func (b *Broker) fetchCurrent(name string, f *fetch) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	v, err := b.cfg.Catalog.Current(ctx, name)
	cancel()
	b.mu.Lock()
	if b.fetches.current[name] == f {
		delete(b.fetches.current, name)
	}
	switch {
	case f.stale:
		// Pushed again below: they read the newer answer, or fetch again.
	case err != nil && away(err):
		b.failedAway(f)
		b.mu.Unlock()
		b.log.Warn("cannot read a secret's current version; its containers keep what they have", "secret", name, "err", err)
		return
	default:
		if err != nil {
			v = 0 // no version to deliver (deleted, revoked, broken)
		}
		if _, ok := b.current[name]; !ok {
			b.current[name] = v
		}
	}
	b.pushWaiters(f)
	b.mu.Unlock()
	b.backpressure()
}

func (b *Broker) fetchValue(k verKey, f *fetch) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	v, err := b.cfg.Catalog.Value(ctx, k.secret, k.version)
	cancel()
	b.mu.Lock()
	if b.fetches.values[k] == f {
		delete(b.fetches.values, k)
	}
	if err != nil && away(err) {
		b.failedAway(f)
		b.mu.Unlock()
		b.log.Error("cannot open secret for delivery; its containers keep what they have", "secret", k.secret, "version", k.version, "err", err)
		return
	}
	r := &fetched{val: v, err: err}
	b.fetches.fresh[k] = r
	b.pushWaiters(f)
	delete(b.fetches.fresh, k)
	_, bound := b.bySecret[k.secret]
	switch {
	case err != nil:
	case r.used || bound && b.current[k.secret] == k.version:
		b.values[k] = v // one fetch per version at a time: nothing cached it meanwhile
	default:
		v.Zero() // nobody needs it any more: never queued, so zeroed at once
	}
	b.mu.Unlock()
	b.backpressure()
}

// pushWaiters pushes again every container that waited for f and is still
// the broker's. Called under b.mu.
func (b *Broker) pushWaiters(f *fetch) { b.pushAgain(f.waiters) }

// pushAgain pushes every container of cs that is still the broker's, each
// agent's sender woken once at the end. Called under b.mu.
func (b *Broker) pushAgain(cs map[*ctr]struct{}) {
	first := b.holdWakes()
	for c := range cs {
		if b.containers[c.info.Id] == c {
			b.push(c)
		}
	}
	b.releaseWakes(first)
}
