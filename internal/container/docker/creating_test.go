package docker_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"coffer/internal/container/docker"
	"coffer/internal/dockertest"
)

// Creating reads a container the engine has not started (or has stopped)
// from the list: the same identity Inspect gives once it runs, labels
// split from its image's; a running container, an unknown id and
// anything but a full id are refused. (That the list answers while
// dockerd holds the container's lock during its start, where an inspect
// waits, is shown by test/e2e's TestDockerRuntimeWrapper.)
func TestCreating(t *testing.T) {
	// A private engine: the test needs no shared state, and the shared
	// engine may be busy restarting for another package's test.
	env := dockertest.StartDaemon(t).Env()
	ref := fmt.Sprintf("coffer-test/creating-%d-%d:1", os.Getpid(), time.Now().UnixNano())
	imageLabels := map[string]string{"app": "payments", "from": "image"}
	imageID := env.BuildImage(t, ref, imageLabels)
	name := fmt.Sprintf("coffer-test-creating-%d", time.Now().UnixNano())
	id, err := env.Docker(t, "create", "--network", "none", "--name", name, "--label", "app=web", "--label", "coffer.require-secrets=true",
		"--label", "coffer.test.owner-pid="+fmt.Sprint(os.Getpid()), ref, "sleep", "3600")
	if id != "" {
		t.Cleanup(func() { env.Remove(t, id) })
	}
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, env.Host)
	ctx := context.Background()

	created, err := rt.Creating(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app": "web", "coffer.require-secrets": "true"}
	if got := withoutOwner(created.Labels); !maps.Equal(got, want) {
		t.Errorf("Labels = %v, want %v", got, want)
	}
	if !maps.Equal(created.ImageLabels, imageLabels) || created.ImageDigest != imageID || created.Name != name || created.Image != ref || created.PID != 0 {
		t.Errorf("Creating = %+v", created)
	}

	if _, err := env.Docker(t, "start", id); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Creating(ctx, id); !errors.Is(err, docker.ErrNotCreating) {
		t.Errorf("running: %v, want ErrNotCreating", err)
	}
	running, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	running.PID = 0
	if !maps.Equal(running.Labels, created.Labels) || !maps.Equal(running.ImageLabels, created.ImageLabels) ||
		running.ID != created.ID || running.Name != created.Name || running.Image != created.Image || running.ImageDigest != created.ImageDigest {
		t.Errorf("Inspect once running = %+v, Creating = %+v", running, created)
	}
	if _, err := env.Docker(t, "kill", id); err != nil {
		t.Fatal(err)
	}
	// Exited: `docker start` may start it again, its hook runs then.
	if _, err := rt.Creating(ctx, id); err != nil {
		t.Errorf("exited: %v", err)
	}
	for _, bad := range []string{id[:12], strings.ToUpper(id), id + "0", strings.Repeat("ab", 32), "", ".*"} {
		if _, err := rt.Creating(ctx, bad); !errors.Is(err, docker.ErrNotFound) {
			t.Errorf("Creating(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}
