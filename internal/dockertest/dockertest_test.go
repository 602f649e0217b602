package dockertest_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"coffer/internal/dockertest"
)

func TestRunExec(t *testing.T) {
	env := dockertest.Require(t)
	c := env.Run(t, dockertest.RunOpts{
		Labels: map[string]string{"coffer.test": "yes"},
		Tmpfs:  []string{"/run/secrets"},
	})
	if c.ID == "" || c.PID <= 0 {
		t.Fatalf("Run = %+v", c)
	}
	out, err := env.Exec(t, c.ID, "cat", "/proc/self/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "eth0") {
		t.Fatalf("container has a network interface:\n%s", out)
	}
	if out, err = env.Exec(t, c.ID, "sh", "-c", "grep ' /run/secrets ' /proc/self/mountinfo"); err != nil || !strings.Contains(out, "tmpfs") {
		t.Fatalf("no tmpfs at /run/secrets: %q %v", out, err)
	}
	if label, _ := env.Docker(t, "inspect", "--format", `{{index .Config.Labels "coffer.test"}}`, c.ID); label != "yes" {
		t.Fatalf("label = %q", label)
	}
	if _, err := env.Exec(t, c.ID, "false"); err == nil {
		t.Fatal("Exec of a failing command returned no error")
	}
	// Image is idempotent.
	if a, b := env.Image(t), env.Image(t); a != b {
		t.Fatalf("Image = %q then %q", a, b)
	}
}

func TestDaemonRestart(t *testing.T) {
	d := dockertest.StartDaemon(t)
	env := d.Env()
	c := env.Run(t, dockertest.RunOpts{Args: []string{"--restart", "always", "--stop-timeout", "1"}})
	d.Restart(t)
	pid, err := env.PID(t, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pid <= 0 || pid == c.PID {
		t.Fatalf("after restart pid = %d (before %d), want a new running process", pid, c.PID)
	}
}

func TestBuildImageWithLabels(t *testing.T) {
	env := dockertest.Require(t)
	ref := fmt.Sprintf("coffer-test/labelled-kit-%d:1", os.Getpid())
	id := env.BuildImage(t, ref, map[string]string{"app": "payments", "org.example/with space": "a b"})
	if !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("BuildImage id = %q", id)
	}
	got, err := env.Docker(t, "image", "inspect", "--format", `{{json .Config.Labels}}`, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got != `{"app":"payments","org.example/with space":"a b"}` {
		t.Fatalf("image labels = %s", got)
	}
	c := env.Run(t, dockertest.RunOpts{Image: ref})
	if out, err := env.Exec(t, c.ID, "true"); err != nil {
		t.Fatalf("container of the built image: %q %v", out, err)
	}
}
