package broker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coffer/internal/secret"
	"coffer/internal/store"
)

// gatedCatalog is a Catalog whose reads can be held: gate, if set, is
// called (outside any lock of the catalog) before each read with the key
// read ("name" version 0 for Current) and the answer the catalog would
// give at that moment, which the read returns whatever changed meanwhile:
// a slow network read of an earlier state. It counts the reads.
type gatedCatalog struct {
	*fakeCatalog
	gate func(k verKey)
	// fail, if set, may make a read fail with its error.
	fail func(k verKey) error

	mu    sync.Mutex
	reads map[verKey]int
}

func (g *gatedCatalog) count(k verKey) {
	g.mu.Lock()
	if g.reads == nil {
		g.reads = map[verKey]int{}
	}
	g.reads[k]++
	g.mu.Unlock()
}

func (g *gatedCatalog) readsOf(k verKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reads[k]
}

func (g *gatedCatalog) Current(ctx context.Context, name string) (uint64, error) {
	v, err := g.fakeCatalog.Current(ctx, name)
	g.count(verKey{name, 0})
	if g.gate != nil {
		g.gate(verKey{name, 0})
	}
	return v, err
}

func (g *gatedCatalog) Value(ctx context.Context, name string, v uint64) (secret.Value, error) {
	val, err := g.fakeCatalog.Value(ctx, name, v)
	g.count(verKey{name, v})
	if g.fail != nil {
		if err := g.fail(verKey{name, v}); err != nil {
			return nil, err
		}
	}
	if g.gate != nil {
		g.gate(verKey{name, v})
	}
	return val, err
}

func gatedRig(t *testing.T, gate func(verKey)) (*rig, *gatedCatalog) {
	var gc *gatedCatalog
	r := newRig(t, func(c *Config) {
		gc = &gatedCatalog{fakeCatalog: c.Catalog.(*fakeCatalog), gate: gate}
		c.Catalog = gc
	}, nil)
	return r, gc
}

// within fails the test unless f returns within d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v: it waits for a store read", what, d)
	}
}

// A store read the broker waits for (a value on etcd is a network round
// trip) holds up only the containers that need it: other containers'
// first deliveries, rotations, acknowledgements and the broker's other
// calls go on meanwhile, a rotation while the read is in flight is what
// the waiting container gets (never the older version it waited for), and
// the older value, never sent, is not kept. Before, push opened values
// under the broker's lock and all of this waited for the read.
func TestStoreReadsDoNotHoldUpOtherDeliveries(t *testing.T) {
	slow := verKey{"app/slow", 1}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r, gc := gatedRig(t, func(k verKey) {
		if k == slow {
			once.Do(func() { close(entered) })
			<-release
		}
	})
	defer once.Do(func() { close(entered) })
	released := sync.OnceFunc(func() { close(release) })
	defer released()

	r.put("app/slow", []byte("slow-v1"))
	r.put("app/fast", []byte("fast-v1"))
	r.bind(binding("slow", "app/slow", "app=slow"))
	r.bind(binding("fast", "app/fast", "app=fast"))
	a := r.dial(r.enroll("node-a", nil, ""))
	b := r.dial(r.enroll("node-b", nil, ""))

	a.report(ctrInfo("c-slow", map[string]string{"app": "slow"}))
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the broker never read app/slow v1")
	}
	// The read of app/slow v1 is held from here on.
	b.report(ctrInfo("c-fast", map[string]string{"app": "fast"}))
	b.waitFiles("c-fast", "fast=app/fast@1")
	b.ack("c-fast", b.generation("c-fast"))
	within(t, 5*time.Second, "Changed (a rotation of another secret)", func() { r.put("app/fast", []byte("fast-v2")) })
	b.waitFiles("c-fast", "fast=app/fast@2")
	within(t, 5*time.Second, "Rollout", func() { r.b.Rollout("app/fast") })
	within(t, 5*time.Second, "Connected", func() { r.b.Connected() })

	// A rotation of the secret being read: the waiting container gets the
	// new version at once; the old read, when it ends, changes nothing.
	within(t, 5*time.Second, "Changed (a rotation of the secret being read)", func() { r.put("app/slow", []byte("slow-v2")) })
	a.waitFiles("c-slow", "slow=app/slow@2")
	gen := a.generation("c-slow")
	released()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.b.mu.Lock()
		_, inFlight := r.b.fetches.values[slow]
		_, cached := r.b.values[slow]
		r.b.mu.Unlock()
		if cached {
			t.Fatal("the value of app/slow v1, read after v2 came and never sent, is kept")
		}
		if !inFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read of app/slow v1 never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong re-push to show
	a.waitFiles("c-slow", "slow=app/slow@2")
	if g := a.generation("c-slow"); g != gen {
		t.Errorf("generation %d after the old read ended, want %d (nothing new to send)", g, gen)
	}
	if got := a.received(); slices.Contains(got, "app/slow@1") {
		t.Errorf("node-a received %v: the version it waited for, after a newer one came", got)
	}
	if n := gc.readsOf(verKey{"app/fast", 1}); n != 1 {
		t.Errorf("app/fast v1 read %d times, want 1", n)
	}
}

// Containers that need the same value wait for one read of it, however
// many they are (a fleet's first delivery of one secret is one read).
func TestOneReadPerValueForManyContainers(t *testing.T) {
	k := verKey{"app/db", 1}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r, gc := gatedRig(t, func(g verKey) {
		if g == k {
			once.Do(func() { close(entered) })
			<-release
		}
	})
	r.put("app/db", []byte("db-v1"))
	r.bind(binding("db", "app/db", "app=web"))
	const n = 20
	var clients []*client
	for i := range n {
		c := r.dial(r.enroll(fmt.Sprintf("node-%d", i), nil, ""))
		c.report(ctrInfo(fmt.Sprintf("c%d", i), web))
		clients = append(clients, c)
	}
	<-entered
	// Every report is in the broker before the read ends: the last one's
	// agent is registered and its container waits.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.b.mu.Lock()
		waiting := 0
		if f := r.b.fetches.values[k]; f != nil {
			waiting = len(f.waiters)
		}
		r.b.mu.Unlock()
		if waiting == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d containers wait for the read, want %d", waiting, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	for i, c := range clients {
		c.waitFiles(fmt.Sprintf("c%d", i), "db=app/db@1")
	}
	if got := gc.readsOf(k); got != 1 {
		t.Errorf("%d reads of app/db v1 for %d containers, want 1", got, n)
	}
}

// A read of a current version that began before a Resync is not kept,
// even when it ends before the read the Resync started: it may predate the
// changes the Resync is for. The container never gets the older version.
func TestResyncDiscardsReadsBegunBefore(t *testing.T) {
	held := []chan struct{}{make(chan struct{}), make(chan struct{})}
	release := []chan struct{}{make(chan struct{}), make(chan struct{})}
	var mu sync.Mutex
	calls := 0
	r, _ := gatedRig(t, func(k verKey) {
		if k != (verKey{"app/db", 0}) {
			return
		}
		mu.Lock()
		n := calls
		calls++
		mu.Unlock()
		if n < 2 {
			close(held[n])
			<-release[n]
		}
	})
	defer func() {
		for _, c := range release {
			select {
			case <-c:
			default:
				close(c)
			}
		}
	}()
	wait := func(c chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never began", what)
		}
	}
	// The catalog holds v1; the broker has not heard of it (no Changed).
	r.cat.mu.Lock()
	r.cat.current["app/db"] = 1
	r.cat.values[verKey{"app/db", 1}] = []byte("db-v1")
	r.cat.values[verKey{"app/db", 2}] = []byte("db-v2")
	r.cat.mu.Unlock()
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	wait(held[0], "the first read") // it answered v1 and is held
	// v2 is written and the change missed (a compacted watch): Resync.
	r.cat.mu.Lock()
	r.cat.current["app/db"] = 2
	r.cat.mu.Unlock()
	within(t, 5*time.Second, "Resync", r.b.Resync)
	wait(held[1], "the read after the Resync") // it answered v2 and is held
	close(release[0])                          // the old read ends first
	time.Sleep(50 * time.Millisecond)
	if got := a.received(); len(got) > 0 {
		t.Fatalf("node-a received %v from the read begun before the Resync", got)
	}
	close(release[1])
	a.waitFiles("c1", "db=app/db@2")
	if got := a.received(); slices.Contains(got, "app/db@1") {
		t.Errorf("node-a received %v", got)
	}
}

// Reports, rotations, stops and acknowledgements from many agents at once,
// with store reads of random length: every container ends with the latest
// version of its secret, and nothing is left waiting (run under -race).
func TestConcurrentDeliveriesConverge(t *testing.T) {
	r, _ := gatedRig(t, func(verKey) { time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond) })
	const agents, per, secrets, rotations = 8, 6, 3, 15
	for s := range secrets {
		r.put(fmt.Sprintf("app/s%d", s), []byte("v1"))
		r.bind(binding(fmt.Sprintf("b%d", s), fmt.Sprintf("app/s%d", s), fmt.Sprintf("s=%d", s)))
	}
	var wg sync.WaitGroup
	clients := make([]*client, agents)
	for i := range agents {
		clients[i] = r.dial(r.enroll(fmt.Sprintf("node-%d", i), nil, ""))
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				id := fmt.Sprintf("c%d-%d", i, j)
				c.report(ctrInfo(id, map[string]string{"s": fmt.Sprint(j % secrets)}))
				if j%3 == 0 {
					c.stop(id)
					c.report(ctrInfo(id, map[string]string{"s": fmt.Sprint(j % secrets)}))
				}
			}
		}()
	}
	var last [secrets]uint64
	for s := range secrets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range rotations {
				last[s] = r.put(fmt.Sprintf("app/s%d", s), fmt.Appendf(nil, "v%d", k+2))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			r.b.Rollout("app/s0")
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	for i, c := range clients {
		for j := range per {
			s := j % secrets
			c.waitFiles(fmt.Sprintf("c%d-%d", i, j), fmt.Sprintf("s%d=app/s%d@%d", s, s, last[s]))
		}
	}
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if n := len(r.b.fetches.values) + len(r.b.fetches.current) + len(r.b.fetches.fresh); n != 0 {
		t.Errorf("%d fetches left in flight", n)
	}
}

// A container's other values stay cached across rotations and binding
// changes: rotating one secret reads that secret's new version once and
// nothing else, and a binding change that does not concern a container
// reads nothing for it.
func TestRotationReadsOnlyTheRotatedValue(t *testing.T) {
	r, gc := gatedRig(t, nil)
	r.put("app/shared", []byte("shared-v1"))
	r.bind(binding("shared", "app/shared", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	const n = 5
	for i := range n {
		own := fmt.Sprintf("app/own-%d", i)
		r.put(own, []byte("own-v1"))
		r.bind(binding(fmt.Sprintf("own-%d", i), own, fmt.Sprintf("ctr=%d", i)))
		a.report(ctrInfo(fmt.Sprintf("c%d", i), map[string]string{"app": "web", "ctr": fmt.Sprint(i)}))
	}
	for i := range n {
		a.waitFiles(fmt.Sprintf("c%d", i), fmt.Sprintf("own-%d=app/own-%d@1,shared=app/shared@1", i, i))
		a.ack(fmt.Sprintf("c%d", i), a.generation(fmt.Sprintf("c%d", i)))
	}
	for v := 2; v <= 3; v++ {
		r.put("app/shared", []byte(fmt.Sprint("shared-v", v)))
		for i := range n {
			a.waitFiles(fmt.Sprintf("c%d", i), fmt.Sprintf("own-%d=app/own-%d@1,shared=app/shared@%d", i, i, v))
			a.ack(fmt.Sprintf("c%d", i), a.generation(fmt.Sprintf("c%d", i)))
		}
	}
	r.put("app/other", []byte("other-v1"))
	r.bind(binding("other", "app/other", "app=none"))
	r.put("app/shared", []byte("shared-v4"))
	for i := range n {
		a.waitFiles(fmt.Sprintf("c%d", i), fmt.Sprintf("own-%d=app/own-%d@1,shared=app/shared@4", i, i))
	}
	for i := range n {
		if got := gc.readsOf(verKey{fmt.Sprintf("app/own-%d", i), 1}); got != 1 {
			t.Errorf("app/own-%d v1 read %d times, want once", i, got)
		}
	}
	for v := uint64(1); v <= 4; v++ {
		if got := gc.readsOf(verKey{"app/shared", v}); got != 1 {
			t.Errorf("app/shared v%d read %d times, want once", v, got)
		}
	}
}

// A read that fails because the store is away leaves the container with
// what it has, and is tried again by itself (even if the store's health
// check never saw an outage); StoreBack, when the store is back, reads
// only what failed, never the values the broker has.
func TestReadsFailedAwayAreRetried(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	r, gc := gatedRig(t, nil)
	gc.fail = func(k verKey) error {
		if k.secret == "app/flaky" && down.Load() {
			return fmt.Errorf("read: %w", store.ErrUnavailable)
		}
		return nil
	}
	r.put("app/flaky", []byte("flaky-v1"))
	r.put("app/ok", []byte("ok-v1"))
	r.bind(binding("flaky", "app/flaky", "app=flaky"))
	r.bind(binding("ok", "app/ok", "app=ok"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c-ok", map[string]string{"app": "ok"}))
	a.waitFiles("c-ok", "ok=app/ok@1")
	a.report(ctrInfo("c-flaky", map[string]string{"app": "flaky"}))
	for deadline := time.Now().Add(5 * time.Second); gc.readsOf(verKey{"app/flaky", 1}) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("app/flaky was never read")
		}
	}
	down.Store(false)
	a.waitFiles("c-flaky", "flaky=app/flaky@1") // retried after awayRetry, with no StoreBack call
	r.b.StoreBack()
	r.b.StoreBack()
	time.Sleep(50 * time.Millisecond)
	if n := gc.readsOf(verKey{"app/ok", 1}); n != 1 {
		t.Errorf("app/ok v1 read %d times: StoreBack read again what the broker had", n)
	}
}
