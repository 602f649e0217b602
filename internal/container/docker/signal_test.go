package docker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"coffer/internal/container/docker"
	"coffer/internal/dockertest"
)

// Signal reaches the container's main process through the engine, and a
// container that is gone or stopped gives the runtime's sentinel errors.
func TestSignalReachesTheMainProcess(t *testing.T) {
	env := dockertest.Require(t)
	c := env.Run(t, dockertest.RunOpts{Cmd: []string{"sh", "-c", `trap "echo got-hup" HUP; echo ready; while true; do sleep 0.1; done`}})
	rt := newRuntime(t, env.Host)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := func() string { out, _ := env.Docker(t, "logs", c.ID); return out }
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs(), "ready"); {
		if time.Now().After(deadline) {
			t.Fatalf("container not ready: %q", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := rt.Signal(ctx, c.ID, "SIGHUP"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs(), "got-hup"); {
		if time.Now().After(deadline) {
			t.Fatalf("the main process did not get SIGHUP: %q", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}

	stopped := env.Run(t, dockertest.RunOpts{Cmd: []string{"true"}})
	for deadline := time.Now().Add(20 * time.Second); ; {
		st, _ := env.Docker(t, "inspect", "--format", "{{.State.Running}}", stopped.ID)
		if st == "false" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("container did not stop")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := rt.Signal(ctx, stopped.ID, "SIGHUP"); !errors.Is(err, docker.ErrNotRunning) {
		t.Fatalf("signal to a stopped container: %v, want ErrNotRunning", err)
	}
	if err := rt.Signal(ctx, "coffer-no-such-container-"+c.ID[:8], "SIGHUP"); !errors.Is(err, docker.ErrNotFound) {
		t.Fatalf("signal to a missing container: %v, want ErrNotFound", err)
	}
}
