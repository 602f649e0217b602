package agent_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
)

// bindRotation makes a binding with a rotation contract through the API.
func (r *rig) bindRotation(name, secretName, selector, rotation string) {
	r.call("PUT", "/v1/bindings/"+name, map[string]string{"secret": secretName, "selector": selector, "rotation": rotation}, nil)
}

// signal:SIGHUP: the agent signals the container's main process through
// the runtime after the new file is in place, once per rotation, and not
// on the first delivery; file contracts signal nothing.
func TestRotationSignalAfterTheSwap(t *testing.T) {
	r := newRig(t)
	r.put("app/key", "k1")
	r.put("app/db", "d1")
	r.bindRotation("web-key", "app/key", "app=web", "signal:SIGHUP")
	r.bind("web-db", "app/db", "app=web")
	_, rt, d, _ := r.startAgent("node-1")
	var mu sync.Mutex
	var seen []string // the key file's value when each signal was sent
	rt.OnSignal(func(id, sig string) {
		v := string(d.Files(id)["key"].Value)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s key=%s", id, sig, v))
		mu.Unlock()
	})
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 100})
	waitValue(t, d, "c1", "key", "k1")
	waitValue(t, d, "c1", "db", "d1")

	r.put("app/db", "d2") // a file contract: no signal
	waitValue(t, d, "c1", "db", "d2")
	r.put("app/key", "k2")
	waitValue(t, d, "c1", "key", "k2")
	deadline := time.Now().Add(10 * time.Second)
	for len(rt.Signals("c1")) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a wrong extra signal
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"c1 SIGHUP key=k2"}; !slices.Equal(seen, want) {
		t.Fatalf("signals %q, want %q (one, after the new file is in place; none for the first delivery or a file contract)", seen, want)
	}
}

// A signal that cannot be sent is a failed delivery: the file is new, the
// process was not told, and the rollout shows the container pending at the
// version it had before.
func TestRotationSignalFailureIsPending(t *testing.T) {
	r := newRig(t)
	r.put("app/key", "k1")
	r.bindRotation("web-key", "app/key", "app=web", "signal:SIGUSR1")
	a, rt, d, _ := r.startAgent("node-1")
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 100})
	waitValue(t, d, "c1", "key", "k1")
	// The server must have counted the first delivery before the next is
	// pushed: an acknowledgement that arrives after a newer state was sent
	// is stale, and dropped (CI under load saw version 0 here).
	r.waitHolder("app/key", "c1", "v1 current")
	rt.Vanish("c1") // the runtime no longer knows it: Signal fails
	r.put("app/key", "k2")
	waitValue(t, d, "c1", "key", "k2")
	for deadline := time.Now().Add(5 * time.Second); a.Stats().Applied < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the second delivery was not acknowledged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.waitHolder("app/key", "c1", "v1 pending")
	var show struct {
		Holders []struct {
			Rotation string `json:"rotation"`
		} `json:"holders"`
	}
	r.call("GET", "/v1/secrets/app/key", nil, &show)
	if len(show.Holders) != 1 || show.Holders[0].Rotation != "signal:SIGUSR1" {
		t.Fatalf("holders %+v; want one, with the signal contract", show.Holders)
	}
}
