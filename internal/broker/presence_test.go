package broker

import (
	"slices"
	"sort"
	"testing"
	"time"

	"coffer/internal/policy"
)

// What a server publishes of its agents (Presence) says for every secret
// what Rollout says: the same holders, versions, pending flags and
// contracts; only connected agents are in it.
func TestPresenceAgreesWithRollout(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.put("app/api", []byte("k1-value"))
	b := binding("db", "app/db", "app=web")
	b.Rotation = policy.RotationNone
	r.bind(b)
	r.bind(binding("api", "app/api", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.report(ctrInfo("c2", map[string]string{"app": "other"}))
	a.waitFiles("c1", "api=app/api@1,db=app/db@1")
	gone := r.dial(r.enroll("node-gone", nil, ""))
	gone.report(ctrInfo("g1", web))
	gone.waitFiles("g1", "api=app/api@1,db=app/db@1")

	check := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			p := r.b.Presence()
			ok := true
			for _, name := range []string{"app/db", "app/api"} {
				var want []Holder
				for _, h := range r.b.Rollout(name) {
					if _, on := p[h.Agent]; on {
						want = append(want, h)
					}
				}
				var got []Holder
				for agent, ap := range p {
					got = append(got, ap.Holders(agent, name)...)
				}
				sort.Slice(got, func(i, j int) bool { return got[i].Agent+got[i].ContainerName < got[j].Agent+got[j].ContainerName })
				ok = ok && len(want) > 0 && slices.Equal(want, got)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Presence %+v disagrees with Rollout %+v", what, p, r.b.Rollout("app/api"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	check("sent, not acknowledged")
	a.ack("c1", a.generation("c1"))
	check("acknowledged")
	r.put("app/api", []byte("k2-value"))
	a.waitFiles("c1", "api=app/api@2,db=app/db@1")
	check("a rotation sent")
	a.ack("c1", a.generation("c1"))
	check("the rotation acknowledged")

	if p := r.b.Presence(); len(p["node-a"].Containers) != 2 || len(p) != 2 {
		t.Fatalf("presence: %+v", p)
	}
	gone.stream.CloseSend()
	deadline := time.Now().Add(5 * time.Second)
	for _, on := r.b.Presence()["node-gone"]; on; _, on = r.b.Presence()["node-gone"] {
		if time.Now().After(deadline) {
			t.Fatal("a disconnected agent is still in Presence")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(r.b.Rollout("app/db")) != 2 {
		t.Fatal("Rollout forgot the offline agent's container (it keeps it, as on a single server)")
	}
}
