package fake_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/fake"
)

func next(t *testing.T, ch <-chan container.Event) container.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return container.Event{}
}

func TestWatchListsThenFollows(t *testing.T) {
	rt := fake.New()
	rt.Start(container.Info{ID: "b", Name: "web", Labels: map[string]string{"app": "web"}, PID: 12})
	rt.Start(container.Info{ID: "a", Name: "db", PID: 11})

	ctx, cancel := context.WithCancel(context.Background())
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Kind != container.Started || ev.Info.ID != "a" {
		t.Fatalf("first event = %+v, want Started a", ev)
	}
	if ev := next(t, ch); ev.Kind != container.Started || ev.Info.Labels["app"] != "web" {
		t.Fatalf("second event = %+v, want Started b with labels", ev)
	}
	if ev := next(t, ch); ev.Kind != container.Synced || !slices.Equal(ev.Running, []string{"a", "b"}) {
		t.Fatalf("third event = %+v, want Synced [a b]", ev)
	}

	rt.Start(container.Info{ID: "c", PID: 13})
	rt.Stop("a")
	rt.Stop("unknown")
	if ev := next(t, ch); ev.Kind != container.Started || ev.Info.ID != "c" {
		t.Fatalf("got %+v, want Started c", ev)
	}
	if ev := next(t, ch); ev.Kind != container.Stopped || ev.Info.ID != "a" || ev.Info.Name != "db" {
		t.Fatalf("got %+v, want Stopped a", ev)
	}

	rt.Vanish("b")
	rt.Resync()
	if ev := next(t, ch); ev.Kind != container.Started || ev.Info.ID != "c" {
		t.Fatalf("got %+v, want Started c after resync", ev)
	}
	if ev := next(t, ch); ev.Kind != container.Synced || !slices.Equal(ev.Running, []string{"c"}) {
		t.Fatalf("got %+v, want Synced [c]", ev)
	}

	cancel()
	for range ch { // drain until closed
	}
}

func TestInspect(t *testing.T) {
	rt := fake.New()
	labels := map[string]string{"k": "v"}
	rt.Start(container.Info{ID: "x", Labels: labels, PID: 5})
	labels["k"] = "changed"
	info, err := rt.Inspect(context.Background(), "x")
	if err != nil || info.PID != 5 || info.Labels["k"] != "v" {
		t.Fatalf("Inspect = %+v, %v", info, err)
	}
	info.Labels["k"] = "mutated"
	if again, _ := rt.Inspect(context.Background(), "x"); again.Labels["k"] != "v" {
		t.Fatal("Inspect returned a shared labels map")
	}
	if _, err := rt.Inspect(context.Background(), "nope"); !errors.Is(err, fake.ErrNotFound) {
		t.Fatalf("Inspect(nope) err = %v, want ErrNotFound", err)
	}
}

func TestConcurrentStartStopWithSlowWatcher(t *testing.T) {
	rt := fake.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Kind != container.Synced {
		t.Fatalf("got %+v, want Synced", ev)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				id := fmt.Sprintf("c%d-%d", g, i)
				rt.Start(container.Info{ID: id})
				rt.Stop(id)
			}
		}()
	}
	wg.Wait() // no watcher read yet: Start/Stop must not block
	started, stopped := 0, 0
	for started+stopped < 1600 {
		switch next(t, ch).Kind {
		case container.Started:
			started++
		case container.Stopped:
			stopped++
		}
	}
	if started != 800 || stopped != 800 || len(rt.Running()) != 0 {
		t.Fatalf("started=%d stopped=%d running=%v", started, stopped, rt.Running())
	}
}

func TestWatchCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fake.New().Watch(ctx); err == nil {
		t.Fatal("Watch with a done context succeeded")
	}
}

func TestImageLabelsCarriedApartAndCopied(t *testing.T) {
	rt := fake.New()
	in := container.Info{ID: "a", PID: 1,
		Labels:      map[string]string{"app": "web"},
		ImageLabels: map[string]string{"app": "payments", "org.opencontainers.image.title": "x"}}
	rt.Start(in)
	in.ImageLabels["app"] = "changed by the caller"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if ev.Info.Labels["app"] != "web" || ev.Info.ImageLabels["app"] != "payments" || len(ev.Info.ImageLabels) != 2 {
		t.Fatalf("Started info = %+v", ev.Info)
	}
	ev.Info.ImageLabels["app"] = "changed by a watcher"
	got, err := rt.Inspect(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.ImageLabels["app"] != "payments" || got.Labels["app"] != "web" {
		t.Fatalf("Inspect = %+v: labels shared with a caller", got)
	}
}
