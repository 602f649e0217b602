package tmpfs

import (
	"context"
	"errors"
	"testing"

	"coffer/internal/container"
	"coffer/internal/dockertest"
	"coffer/internal/secret"
)

func TestHelperRestartsAfterDeath(t *testing.T) {
	env := dockertest.Require(t)
	c := env.Run(t, dockertest.RunOpts{})
	info := container.Info{ID: c.ID, Name: c.Name, PID: c.PID}
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	files := func(v uint64) []secret.File {
		return []secret.File{{Secret: "s", Version: v, Name: "s", Mode: 0o400, Value: secret.Value("value")}}
	}
	if err := d.Apply(ctx, info, files(1)); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	first := d.h
	d.mu.Unlock()
	if err := first.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.dead
	if err := d.Apply(ctx, info, files(2)); err != nil {
		t.Fatalf("Apply after the helper died: %v", err)
	}
	d.mu.Lock()
	second := d.h
	d.mu.Unlock()
	if second == first || second.proc.Pid == first.proc.Pid {
		t.Fatal("helper not restarted")
	}
	if out, err := env.Exec(t, c.ID, "cat", "/run/secrets/s"); err != nil || out != "value" {
		t.Fatalf("after restart: %q %v", out, err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.Apply(canceled, info, files(3)); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Apply: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.exited:
	default:
		t.Fatal("Close did not wait for the helper")
	}
	if err := d.Apply(ctx, info, files(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
}

func TestHelperMissingInit(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the helper start timeout")
	}
	// /bin/true exits at once without the hello frame.
	_, err := startHelper("/bin/true")
	if err == nil {
		t.Fatal("a binary without Init was accepted as the helper")
	}
}
