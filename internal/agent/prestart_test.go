package agent_test

import (
	"context"
	"testing"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
)

// A container reported at create (Prepare, no pid yet) is not delivered to
// (a pid of 0 names no process), and StartNow writes its files from the
// agent's memory before it returns: a hook that calls it before the
// container's first instruction makes the first read see them.
func TestPrepareThenStartNow(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, _, d, _ := r.startAgentWith("node-1", agent.Config{OnlyLabels: map[string]string{"served": "yes"}})
	waitStats(t, a, func(s agent.Stats) bool { return s.Connected })

	info := container.Info{ID: "pod-c1", Name: "shop/web/web", Labels: map[string]string{"app": "web", "served": "yes"}, Image: "x:1"}
	if !a.Prepare(info) {
		t.Fatal("Prepare: not served")
	}
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 1 && s.Containers == 1 })
	time.Sleep(100 * time.Millisecond) // the Desired follows the value on the stream
	if n := d.Applies("pod-c1"); n != 0 {
		t.Fatalf("%d applies before the container had a pid", n)
	}
	info.PID = 4242
	if !a.StartNow(context.Background(), info, time.Second) {
		t.Error("StartNow: not ready after writing the files")
	}
	if f, ok := d.Files("pod-c1")["db"]; !ok || string(f.Value) != "v1" {
		t.Fatalf("after StartNow the files are %v", d.Files("pod-c1"))
	}

	// Not served: not reported, nothing written.
	if a.Prepare(container.Info{ID: "pod-c2", Labels: map[string]string{"app": "web"}}) {
		t.Error("Prepare served a container without the opt-in label")
	}
	if !a.StartNow(context.Background(), container.Info{ID: "pod-c2", Labels: map[string]string{"app": "web"}, PID: 4243}, time.Second) {
		t.Error("StartNow: an unserved container is not ready (it needs nothing of Coffer)")
	}
	if d.Applies("pod-c2") != 0 {
		t.Error("an unserved container was delivered to")
	}

	// Not prepared (say the agent restarted in between): StartNow reports
	// it and returns at once; the files follow.
	late := container.Info{ID: "pod-c3", Labels: map[string]string{"app": "web", "served": "yes"}, PID: 4244}
	if a.StartNow(context.Background(), late, time.Second) {
		t.Error("StartNow: ready for a container the server has not answered for")
	}
	waitValue(t, d, "pod-c3", "db", "v1")

	// A prepared container whose start failed is forgotten; a running one
	// is left to the runtime.
	ghost := container.Info{ID: "pod-c4", Labels: map[string]string{"app": "web", "served": "yes"}}
	a.Prepare(ghost)
	waitStats(t, a, func(s agent.Stats) bool { return s.Containers == 3 })
	a.Forget(context.Background(), "pod-c4")
	a.Forget(context.Background(), "pod-c1")
	waitStats(t, a, func(s agent.Stats) bool { return s.Containers == 2 })
	if _, ok := d.Files("pod-c1")["db"]; !ok {
		t.Error("Forget removed a running container")
	}
}

// A start retried under the same container id with a new process (Docker
// reuses the id when `docker start` retries a start its runtime hook
// refused) gets its files written into the new process: what the agent
// applied went into the old one, which never ran. Before, StartNow saw the
// state as applied and said ready without writing anything, and a
// container that requires its secrets started without them.
func TestStartNowWritesAgainIntoANewProcess(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, _, d, _ := r.startAgentWith("node-1", agent.Config{})
	waitStats(t, a, func(s agent.Stats) bool { return s.Connected })

	info := container.Info{ID: "ctr-retried", Name: "web", Labels: map[string]string{"app": "web"}, Image: "x:1"}
	a.Prepare(info)
	waitStats(t, a, func(s agent.Stats) bool { return s.Values == 1 && s.Containers == 1 })
	time.Sleep(100 * time.Millisecond) // the Desired follows the value on the stream
	info.PID = 5001
	if !a.StartNow(context.Background(), info, time.Second) {
		t.Fatal("StartNow: not ready after writing the files")
	}
	if n := d.Applies("ctr-retried"); n != 1 {
		t.Fatalf("%d applies for the first process", n)
	}
	// The start was refused after all (say another hook failed); the
	// retry runs a new process under the same id.
	a.Prepare(info)
	info.PID = 5002
	if !a.StartNow(context.Background(), info, time.Second) {
		t.Fatal("StartNow: not ready for the retried start")
	}
	if n := d.Applies("ctr-retried"); n != 2 {
		t.Fatalf("the retried start's process was not written to (%d applies)", n)
	}
	if f, ok := d.Files("ctr-retried")["db"]; !ok || string(f.Value) != "v1" {
		t.Fatalf("after the retry the files are %v", d.Files("ctr-retried"))
	}
}
