package docker_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/docker"
	"coffer/internal/dockertest"
)

// waitFor reads events until match returns true, failing after timeout. It
// returns the events read, the matching one last.
func waitFor(t *testing.T, ch <-chan container.Event, timeout time.Duration, what string, match func(container.Event) bool) []container.Event {
	t.Helper()
	var seen []container.Event
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed while waiting for %s", what)
			}
			seen = append(seen, ev)
			if match(ev) {
				return seen
			}
		case <-deadline:
			t.Fatalf("no %s within %v; saw %d events", what, timeout, len(seen))
		}
	}
}

func newRuntime(t *testing.T, host string) *docker.Runtime {
	t.Helper()
	return newRuntimeResync(t, host, 0)
}

func newRuntimeResync(t *testing.T, host string, resync time.Duration) *docker.Runtime {
	t.Helper()
	rt, err := docker.New(docker.Config{
		Resync:     resync,
		Host:       host,
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestWatchListsFollowsAndInspects(t *testing.T) {
	env := dockertest.Require(t)
	image := env.Image(t)
	a := env.Run(t, dockertest.RunOpts{Labels: map[string]string{"coffer.test/app": "a"}})

	rt := newRuntime(t, env.Host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	serverAPI, err := env.Docker(t, "version", "--format", "{{.Server.APIVersion}}")
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.APIVersion(); got != serverAPI {
		t.Errorf("negotiated API %s, engine speaks %s", got, serverAPI)
	}

	seen := waitFor(t, ch, 10*time.Second, "Synced", func(ev container.Event) bool { return ev.Kind == container.Synced })
	synced := seen[len(seen)-1]
	if !slices.Contains(synced.Running, a.ID) {
		t.Fatalf("Synced %v lacks %s", synced.Running, a.ID)
	}
	i := slices.IndexFunc(seen, func(ev container.Event) bool { return ev.Kind == container.Started && ev.Info.ID == a.ID })
	if i < 0 {
		t.Fatalf("no Started for %s before Synced", a.ID)
	}
	digest, _ := env.Docker(t, "inspect", "--format", "{{.Image}}", a.ID)
	got := seen[i].Info
	want := container.Info{ID: a.ID, Name: a.Name, Labels: map[string]string{"coffer.test/app": "a"}, Image: image, ImageDigest: digest, PID: a.PID}
	if got.ID != want.ID || got.Name != want.Name || got.Image != want.Image || got.ImageDigest != want.ImageDigest ||
		got.PID != want.PID || got.Labels["coffer.test/app"] != "a" || !strings.HasPrefix(got.ImageDigest, "sha256:") {
		t.Fatalf("Started info = %+v, want %+v", got, want)
	}

	b := env.Run(t, dockertest.RunOpts{Labels: map[string]string{"coffer.test/app": "b"}})
	seen = waitFor(t, ch, 10*time.Second, "Started b", func(ev container.Event) bool {
		return ev.Kind == container.Started && ev.Info.ID == b.ID
	})
	if info := seen[len(seen)-1].Info; info.PID != b.PID || info.Labels["coffer.test/app"] != "b" || info.Name != b.Name {
		t.Fatalf("Started b info = %+v", info)
	}

	// rm -f sends die and destroy: one Stopped only.
	env.Remove(t, b.ID)
	c := env.Run(t, dockertest.RunOpts{})
	seen = waitFor(t, ch, 10*time.Second, "Started c", func(ev container.Event) bool {
		return ev.Kind == container.Started && ev.Info.ID == c.ID
	})
	stops := 0
	for _, ev := range seen {
		if ev.Kind == container.Stopped && ev.Info.ID == b.ID {
			stops++
			if ev.Info.Name != b.Name {
				t.Errorf("Stopped b name = %q", ev.Info.Name)
			}
		}
	}
	if stops != 1 {
		t.Fatalf("Stopped events for b = %d, want 1", stops)
	}

	info, err := rt.Inspect(ctx, a.ID)
	if err != nil || info.PID != a.PID {
		t.Fatalf("Inspect a = %+v, %v", info, err)
	}
	if _, err := rt.Inspect(ctx, b.ID); !errors.Is(err, docker.ErrNotFound) {
		t.Fatalf("Inspect removed container: err = %v, want ErrNotFound", err)
	}
	created, err := env.Docker(t, "create", "--network", "none", image, "sleep", "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Remove(t, created) })
	if _, err := rt.Inspect(ctx, created); !errors.Is(err, docker.ErrNotRunning) {
		t.Fatalf("Inspect created container: err = %v, want ErrNotRunning", err)
	}

	cancel()
	for range ch { // closes once ctx is done
	}
}

func TestWatchSurvivesDaemonRestart(t *testing.T) {
	d := dockertest.StartDaemon(t)
	env := d.Env()
	a := env.Run(t, dockertest.RunOpts{Args: []string{"--restart", "always", "--stop-timeout", "1"}})

	rt := newRuntime(t, d.Host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := waitFor(t, ch, 10*time.Second, "first Synced", func(ev container.Event) bool { return ev.Kind == container.Synced })
	if got := seen[len(seen)-1].Running; !slices.Equal(got, []string{a.ID}) {
		t.Fatalf("first Synced = %v, want [%s]", got, a.ID)
	}

	d.Restart(t)
	seen = waitFor(t, ch, 30*time.Second, "Synced after restart", func(ev container.Event) bool { return ev.Kind == container.Synced })
	var restarted *container.Info
	for _, ev := range seen {
		if ev.Kind == container.Started && ev.Info.ID == a.ID {
			restarted = &ev.Info
		}
	}
	// Docker restarts "always" containers while it starts; the list after
	// reconnecting may come just before that.
	if restarted == nil {
		seen = waitFor(t, ch, 30*time.Second, "Started a after restart", func(ev container.Event) bool {
			return ev.Kind == container.Started && ev.Info.ID == a.ID
		})
		restarted = &seen[len(seen)-1].Info
	}
	if pid, _ := env.PID(t, a.ID); restarted.PID != pid || pid == a.PID {
		t.Fatalf("Started after restart pid = %d, engine says %d, before %d", restarted.PID, pid, a.PID)
	}

	b := env.Run(t, dockertest.RunOpts{})
	waitFor(t, ch, 10*time.Second, "Started b after restart", func(ev container.Event) bool {
		return ev.Kind == container.Started && ev.Info.ID == b.ID
	})
}

func TestWatchFailsWithoutEngine(t *testing.T) {
	rt, err := docker.New(docker.Config{Host: "unix://" + t.TempDir() + "/none.sock"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := rt.Watch(ctx); err == nil {
		t.Fatal("Watch succeeded without an engine")
	}
}

func TestNewRejectsBadBackoff(t *testing.T) {
	if _, err := docker.New(docker.Config{MinBackoff: time.Second, MaxBackoff: time.Millisecond}); err == nil {
		t.Fatal("New accepted MaxBackoff < MinBackoff")
	}
}

func TestPeriodicResync(t *testing.T) {
	env := dockertest.Require(t)
	a := env.Run(t, dockertest.RunOpts{})
	rt := newRuntimeResync(t, env.Host, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // the first list, then two resyncs
		seen := waitFor(t, ch, 10*time.Second, "Synced", func(ev container.Event) bool { return ev.Kind == container.Synced })
		if !slices.Contains(seen[len(seen)-1].Running, a.ID) {
			t.Fatalf("Synced lacks %s", a.ID)
		}
		if !slices.ContainsFunc(seen, func(ev container.Event) bool { return ev.Kind == container.Started && ev.Info.ID == a.ID }) {
			t.Fatalf("no Started for %s before Synced", a.ID)
		}
	}
}
