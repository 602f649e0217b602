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

// PresenceChanges, taken after every step and applied to a copy, keeps
// that copy equal to Presence (no change goes unmarked), and returns only
// the agents a step concerns.
func TestPresenceChangesKeepACopyInStep(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	r.put("app/own", []byte("o1-value"))
	r.bind(binding("db", "app/db", "app=web"))
	a := r.dial(r.enroll("node-a", nil, ""))
	bn := r.dial(r.enroll("node-b", nil, ""))
	a.report(ctrInfo("a1", web))
	bn.report(ctrInfo("b1", web))
	bn.report(ctrInfo("b2", map[string]string{"app": "own"}))
	a.waitFiles("a1", "db=app/db@1")
	bn.waitFiles("b1", "db=app/db@1")
	// b2 matches nothing yet, so no file tells it was seen: wait for it in
	// Presence, or its arrival would fall into the next step.
	for deadline := time.Now().Add(5 * time.Second); len(r.b.Presence()["node-b"].Containers) != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node-b's second container is not in Presence")
		}
	}

	acked := func(agent, id string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			for _, c := range r.b.Presence()[agent].Containers {
				if c.ID == id && len(c.Secrets) > 0 && !c.Secrets[0].Pending {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's acknowledgement of %s not in Presence", agent, id)
			}
		}
	}
	mirror, _ := r.b.PresenceChanges(true)
	// step applies PresenceChanges to the copy until it equals Presence
	// and nothing more has changed for 100 ms: a step's own late changes
	// count as its own, not the next one's.
	step := func(what string, only ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		seen := map[string]bool{}
		var quiet time.Time
		for {
			changed, gone := r.b.PresenceChanges(false)
			if len(changed)+len(gone) > 0 {
				quiet = time.Time{}
			}
			for name, p := range changed {
				mirror[name] = p
				seen[name] = true
			}
			for _, name := range gone {
				delete(mirror, name)
				seen[name] = true
			}
			full := r.b.Presence()
			same := len(full) == len(mirror)
			for name, p := range full {
				m, ok := mirror[name]
				same = same && ok && m.Equal(p)
			}
			if !same {
				quiet = time.Time{}
			} else if quiet.IsZero() {
				quiet = time.Now()
			} else if time.Since(quiet) >= 100*time.Millisecond {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the copy kept from PresenceChanges %+v differs from Presence %+v", what, mirror, full)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if only != nil {
			for name := range seen {
				if !slices.Contains(only, name) {
					t.Errorf("%s: PresenceChanges returned %s, which the step does not concern", what, name)
				}
			}
		}
	}
	step("start")
	a.ack("a1", a.generation("a1"))
	acked("node-a", "a1")
	step("node-a acknowledged", "node-a")
	r.bind(binding("own", "app/own", "app=own"))
	bn.waitFiles("b2", "own=app/own@1")
	step("a binding only node-b's container matches", "node-a", "node-b") // a binding change regrants every container
	r.put("app/own", []byte("o2-value"))
	bn.waitFiles("b2", "own=app/own@2")
	step("a rotation of node-b's secret", "node-b")
	r.put("app/db", []byte("v2-value"))
	a.waitFiles("a1", "db=app/db@2")
	step("a rotation of both")
	bn.ack("b1", bn.generation("b1"))
	acked("node-b", "b1")
	step("node-b acknowledged", "node-b")
	bn.stop("b2")
	for deadline := time.Now().Add(5 * time.Second); len(r.b.Presence()["node-b"].Containers) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node-b's stopped container is still there")
		}
	}
	step("node-b's container stopped", "node-b")
	a.stream.CloseSend()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, on := r.b.Presence()["node-a"]; !on {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-a is still connected")
		}
	}
	step("node-a disconnected", "node-a")
	if _, ok := mirror["node-a"]; ok {
		t.Fatal("a disconnected agent was not returned as gone")
	}
}
