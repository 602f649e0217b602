package broker

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/catalog"
	"coffer/internal/policy"
	"coffer/internal/secret"
)

// BenchmarkRotationFanout10k is the server's side of one rotation of a
// secret bound to 10,000 containers on 1,000 agents: the broker's pushes,
// then each stream's outbox made into messages and encoded, as the
// streams' senders do (no network, no TLS, no audit trail). It is what a
// server spends per rotation in coffer-bench fanout, minus the transport.
func BenchmarkRotationFanout10k(b *testing.B) {
	const agents, per = 1000, 10
	set, err := policy.NewSet([]policy.Binding{{Name: "db", Secret: "app/db", Selector: "app=web"}})
	if err != nil {
		b.Fatal(err)
	}
	cat := &fakeCatalog{set: set, current: map[string]uint64{"app/db": 1}, values: map[verKey][]byte{{"app/db", 1}: []byte("value-1-0123456789abcdef")}}
	br := New(Config{Catalog: cat})
	sessions := make([]*session, agents)
	for i := range agents {
		name := fmt.Sprintf("node-%d", i)
		s := newSession(name, func() {}, true, cofferv1.AgentMaxRecv, nil)
		sessions[i] = s
		br.mu.Lock()
		br.sessions[name] = s
		br.mu.Unlock()
		for j := range per {
			br.started(s, nil, "", &cofferv1.Container{Id: fmt.Sprintf("c-%d-%d", i, j), Name: fmt.Sprintf("web-%d-%d", i, j),
				Labels: map[string]string{"app": "web"}, Image: "img:1", ImageDigest: "sha256:0123456789"})
		}
	}
	drain := func() int {
		n := 0
		for _, s := range sessions {
			for {
				s.mu.Lock()
				k := len(s.desired)
				s.mu.Unlock()
				if k == per {
					break
				}
				runtime.Gosched()
			}
			for _, m := range s.messages(s.take()) {
				out, err := proto.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				n += len(out)
			}
		}
		return n
	}
	drain()
	v := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		v++
		cat.mu.Lock()
		cat.current["app/db"] = v
		cat.values[verKey{"app/db", v}] = fmt.Appendf(nil, "value-%d-0123456789abcdef", v)
		cat.mu.Unlock()
		br.Changed(catalog.Change{Kind: catalog.SecretPut, Secret: "app/db", Version: v})
		drain()
	}
}

// slowCatalog answers like a store across a network: every read takes rtt.
type slowCatalog struct {
	*fakeCatalog
	rtt time.Duration
}

func (c *slowCatalog) Current(ctx context.Context, name string) (uint64, error) {
	time.Sleep(c.rtt)
	return c.fakeCatalog.Current(ctx, name)
}

func (c *slowCatalog) Value(ctx context.Context, name string, v uint64) (secret.Value, error) {
	time.Sleep(c.rtt)
	return c.fakeCatalog.Value(ctx, name, v)
}

// BenchmarkFirstDelivery10kRTT1ms is the first delivery to 10,000
// containers on 1,000 agents, each container bound to a secret of its own,
// from a store whose every read takes 1 ms (etcd across a network): the
// agents report their containers at once (one goroutine per agent, as
// their streams do) and it ends when every container's state is queued on
// its stream. The current versions are known (the watch told them); the
// 10,000 values are not.
func BenchmarkFirstDelivery10kRTT1ms(b *testing.B) {
	const agents, per = 1000, 10
	var bs []policy.Binding
	cat := &fakeCatalog{current: map[string]uint64{}, values: map[verKey][]byte{}}
	for i := range agents * per {
		name := fmt.Sprintf("app/s%d", i)
		bs = append(bs, policy.Binding{Name: fmt.Sprintf("b%d", i), Secret: name, Selector: fmt.Sprintf("id=%d", i)})
		cat.current[name] = 1
		cat.values[verKey{name, 1}] = fmt.Appendf(nil, "value-%d", i)
	}
	set, err := policy.NewSet(bs)
	if err != nil {
		b.Fatal(err)
	}
	cat.set = set
	for b.Loop() {
		b.StopTimer()
		br := New(Config{Catalog: &slowCatalog{fakeCatalog: cat, rtt: time.Millisecond}})
		sessions := make([]*session, agents)
		for i := range agents {
			name := fmt.Sprintf("node-%d", i)
			sessions[i] = newSession(name, func() {}, true, cofferv1.AgentMaxRecv, nil)
			br.sessions[name] = sessions[i]
			for name, v := range cat.current {
				br.current[name] = v
			}
		}
		b.StartTimer()
		var wg sync.WaitGroup
		for i, s := range sessions {
			wg.Go(func() {
				for j := range per {
					id := i*per + j
					br.started(s, nil, "", &cofferv1.Container{Id: fmt.Sprintf("c%d", id), Name: fmt.Sprintf("c%d", id),
						Labels: map[string]string{"id": fmt.Sprint(id)}, Image: "img:1"})
				}
			})
		}
		wg.Wait()
		for _, s := range sessions {
			for {
				s.mu.Lock()
				k := len(s.desired)
				s.mu.Unlock()
				if k == per {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
}
