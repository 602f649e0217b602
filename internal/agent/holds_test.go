package agent_test

import (
	"context"
	"testing"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
)

// Holds is false until the server answered a prepared container's report,
// true after (a container bound to nothing too: its answer is no file),
// and false again once the container is forgotten.
func TestHolds(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bind("web-db", "app/db", "app=web")
	a, _, _, _ := r.startAgentWith("node-1", agent.Config{})
	waitStats(t, a, func(s agent.Stats) bool { return s.Connected })
	if a.Holds("pod-h1") {
		t.Fatal("Holds before any report")
	}
	for _, info := range []container.Info{
		{ID: "pod-h1", Name: "shop/web/web", Labels: map[string]string{"app": "web"}, Image: "x:1"},
		{ID: "pod-h2", Name: "shop/other/web", Labels: map[string]string{"app": "other"}, Image: "x:1"},
	} {
		a.Prepare(info)
		deadline := time.Now().Add(10 * time.Second)
		for !a.Holds(info.ID) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Holds still false 10s after Prepare", info.ID)
			}
			time.Sleep(10 * time.Millisecond)
		}
		a.Forget(context.Background(), info.ID)
		if a.Holds(info.ID) {
			t.Errorf("%s: Holds after Forget", info.ID)
		}
	}
}
