package broker

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/identity"
	"coffer/internal/policy"
)

// restarted is a new broker on the same catalog, agents and audit trail,
// on a new address: what an agent finds after a server restart (or
// another server of a cluster). It knows nothing of the containers.
func (r *rig) restarted() *rig {
	r.t.Helper()
	cert, err := r.ca.LoadOrIssueServerCert(r.t.TempDir(), nil, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	n := *r
	n.b = New(Config{Catalog: r.cat, Audit: r.aud, Agents: r.agents})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerTLSConfig(cert, r.ca))))
	cofferv1.RegisterAgentServiceServer(gs, n.b.Service())
	go gs.Serve(ln)
	r.t.Cleanup(gs.Stop)
	return &n
}

func held(file, secret string, v uint64) *cofferv1.FileRef {
	return &cofferv1.FileRef{File: file, Secret: secret, Version: v}
}

// A none pin survives a broker restart: the new broker keeps the version
// the agent reports the container holds, instead of sending the current
// one. A claim it cannot honour (a newer version, another secret, a
// version pruned) gives the current version, and a container the agent
// holds nothing for gets the current one. (On the code before
// Container.held, c1 got app/db@2 from the new broker.)
func TestNonePinSurvivesABrokerRestart(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	b := binding("db", "app/db", "app=web")
	b.Rotation = policy.RotationNone
	r.bind(b)
	cert := r.enroll("node-a", nil, "")
	a := r.dial(cert)
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	a.ack("c1", a.generation("c1"))
	r.put("app/db", []byte("v2-value"))
	r.put("app/db", []byte("v3-value"))
	a.waitFiles("c1", "db=app/db@1")

	r2 := r.restarted()
	a2 := r2.dial(cert)
	withHeld := func(id string, h ...*cofferv1.FileRef) *cofferv1.Container {
		c := ctrInfo(id, web)
		c.Held = h
		return c
	}
	a2.report(withHeld("c1", held("db", "app/db", 1)))
	a2.report(withHeld("c2"))                                // holds nothing: current
	a2.report(withHeld("c3", held("db", "app/db", 9)))       // a version that does not exist
	a2.report(withHeld("c4", held("db", "other/secret", 1))) // another secret in that file
	a2.report(withHeld("c5", held("other", "app/db", 1)))    // another file
	a2.waitFiles("c1", "db=app/db@1")
	for _, id := range []string{"c2", "c3", "c4", "c5"} {
		a2.waitFiles(id, "db=app/db@3")
	}
	a2.ack("c1", a2.generation("c1"))
	// Kept from then on by the new broker's own record, across rotations
	// and reports without the claim.
	r2.put("app/db", []byte("v4-value"))
	a2.report(ctrInfo("c1", web))
	time.Sleep(20 * time.Millisecond)
	a2.waitFiles("c1", "db=app/db@1")
	a2.ack("c1", a2.generation("c1")) // pending until the state sent again is acknowledged
	r2.waitHolder("app/db", "c1", func(h Holder) bool { return !h.Pending && h.Version == 1 })

	// A claim for a version that can no longer be opened: the current one.
	r3 := r.restarted()
	r.cat.mu.Lock()
	delete(r.cat.values, verKey{"app/db", 1})
	r.cat.mu.Unlock()
	a3 := r3.dial(cert)
	a3.report(withHeld("c1", held("db", "app/db", 1)))
	a3.waitFiles("c1", "db=app/db@4")

	// The claim applies to none bindings only.
	b.Rotation = ""
	r3.bind(b)
	r4 := r.restarted()
	a4 := r4.dial(cert)
	a4.report(withHeld("c6", held("db", "app/db", 2)))
	a4.waitFiles("c6", "db=app/db@4")
}

func ackProcess(c *client, id string, gen uint64, p ...*cofferv1.ProcessFile) {
	c.t.Helper()
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{ContainerId: id, Generation: gen, Process: p}}})
}

// ackProcessOnly acknowledges gen again because the process changed.
func ackProcessOnly(c *client, id string, gen uint64, p ...*cofferv1.ProcessFile) {
	c.t.Helper()
	c.send(&cofferv1.AgentMessage{Msg: &cofferv1.AgentMessage_Applied{Applied: &cofferv1.Applied{ContainerId: id, Generation: gen, Process: p, ProcessOnly: true}}})
}

func proc(file, secret string, v uint64, restarts bool) *cofferv1.ProcessFile {
	return &cofferv1.ProcessFile{File: file, Secret: secret, Version: v, Restarts: restarts}
}

// waitHolder waits until container id's holder of secret satisfies ok.
func (r *rig) waitHolder(secret, id string, ok func(Holder) bool) Holder {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, h := range r.b.Rollout(secret) {
			if h.ContainerID == id && ok(h) {
				return h
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("holders of %s: %s", secret, holders(r.b.Rollout(secret)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func holders(hs []Holder) string {
	var out []string
	for _, h := range hs {
		s := fmt.Sprintf("%s v%d pending=%v", h.ContainerID, h.Version, h.Pending)
		if h.Process != nil {
			s += fmt.Sprintf(" process v%d %s", h.Process.Version, h.Process.State)
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// The rollout shows what a container's process runs with: a new file whose
// process still runs with the old version is pending (restart-pending)
// until the agent acknowledges the same generation again with the process
// restarted; coffer exec without restarts is stale but not pending. A
// report about files the container was not sent, or another secret, is
// dropped; a repeated acknowledgement audits nothing.
func TestRolloutShowsTheProcessState(t *testing.T) {
	r := newRig(t, nil, nil)
	r.put("app/db", []byte("v1-value"))
	b := binding("db", "app/db", "app=web")
	b.Rotation = policy.RotationRestartProcess
	r.bind(b)
	a := r.dial(r.enroll("node-a", nil, ""))
	a.report(ctrInfo("c1", web))
	a.waitFiles("c1", "db=app/db@1")
	ackProcess(a, "c1", a.generation("c1"), proc("db", "app/db", 1, true))
	r.waitHolder("app/db", "c1", func(h Holder) bool {
		return !h.Pending && h.Version == 1 && h.Process != nil && *h.Process == ProcessState{1, ProcessCurrent}
	})

	r.put("app/db", []byte("v2-value"))
	a.waitFiles("c1", "db=app/db@2")
	gen := a.generation("c1")
	ackProcess(a, "c1", gen, proc("db", "app/db", 1, true))
	r.waitHolder("app/db", "c1", func(h Holder) bool {
		return h.Pending && h.Version == 2 && h.Process != nil && *h.Process == ProcessState{1, ProcessRestartPending}
	})
	r.waitAudit("delivery.rotate", 1, nil)

	// Hostile or confused reports: files not sent, another secret, the same
	// file many times: what is about the container's own files is kept.
	var junk []*cofferv1.ProcessFile
	for i := range 1000 {
		junk = append(junk, proc(fmt.Sprint("f", i), "app/db", 2, true), proc("db", "other/secret", 2, true))
	}
	ackProcessOnly(a, "c1", gen, append(junk, proc("db", "app/db", 0, true), proc("db", "app/db", 2, true))...)
	h := r.waitHolder("app/db", "c1", func(h Holder) bool {
		return h.Process != nil && *h.Process == ProcessState{0, ProcessRestartPending}
	})
	if !h.Pending {
		t.Fatalf("holder %+v: a process on an unknown older content is pending", h)
	}
	// The process restarted: the same generation again.
	ackProcessOnly(a, "c1", gen, proc("db", "app/db", 2, true))
	r.waitHolder("app/db", "c1", func(h Holder) bool {
		return !h.Pending && h.Version == 2 && h.Process != nil && *h.Process == ProcessState{2, ProcessCurrent}
	})
	// An old generation's report changes nothing.
	ackProcessOnly(a, "c1", gen-1, proc("db", "app/db", 1, true))
	time.Sleep(50 * time.Millisecond)
	r.waitHolder("app/db", "c1", func(h Holder) bool { return h.Process != nil && h.Process.State == ProcessCurrent })
	if n := len(r.aud.find("delivery.rotate", nil)); n != 1 {
		t.Fatalf("%d delivery.rotate records for one rotation (process-only acknowledgements audited?)", n)
	}

	// A process-only acknowledgement never acknowledges files: a new
	// state stays pending until the agent applied it.
	r.put("app/db", []byte("v3-value"))
	a.waitFiles("c1", "db=app/db@3")
	ackProcessOnly(a, "c1", a.generation("c1"), proc("db", "app/db", 2, true))
	time.Sleep(50 * time.Millisecond)
	if h := r.waitHolder("app/db", "c1", func(Holder) bool { return true }); !h.Pending || h.Version != 2 {
		t.Fatalf("a process-only acknowledgement acknowledged the files: %+v", h)
	}
	if n := len(r.aud.find("delivery.rotate", nil)); n != 1 {
		t.Fatalf("%d delivery.rotate records before the new state was applied", n)
	}

	// coffer exec without restarts: the process keeps the old environment
	// for life. Shown, not pending.
	ackProcess(a, "c1", a.generation("c1"), proc("db", "app/db", 2, false))
	r.waitHolder("app/db", "c1", func(h Holder) bool {
		return !h.Pending && h.Version == 3 && h.Process != nil && *h.Process == ProcessState{2, ProcessStale}
	})
	// No record: no process state.
	a.ack("c1", a.generation("c1"))
	r.waitHolder("app/db", "c1", func(h Holder) bool { return h.Process == nil })
}
