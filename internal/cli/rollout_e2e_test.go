package cli_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"coffer/test/security/hostile"
	"coffer/test/testkit"
)

// TestCLIRolloutAndEffects drives a real server and a hand-driven agent
// with one running container: rollout status waits and names laggards,
// every --dry-run lists the container's gain and loss, a rollback reaches
// the container with the old value, rm and undelete take it away and give
// it back, and secret show --watch follows the rollout.
func TestCLIRolloutAndEffects(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	admin := hostile.NewAdmin(t, s)
	const v1, v2 = "rollout-probe-value-one", "rollout-probe-value-two"
	s.MustCLI(t, v1, "secret", "put", "payments/db")
	s.MustCLI(t, "", "bind", "create", "web-db", "--secret", "payments/db", "--selector", "app=web")
	agent := hostile.Enroll(t, s, "node-1", admin.JoinToken(t)).Dial(t)
	agent.Report(hostile.Container("c1", map[string]string{"app": "web"}))
	agent.WaitFiles("c1", "db=payments/db@1")

	// Not acknowledged yet: a laggard, listed at the timeout.
	out, errOut, code := s.CLI(t, "", "rollout", "status", "payments/db", "--timeout", "1s")
	if !serverRefused(code) || !strings.Contains(errOut, "timed out after 1s: 1 of 1 containers do not hold payments/db version 1") ||
		!strings.Contains(errOut, "node-1  hostile-c1  c1  nothing yet (newer state sent, not acknowledged)") {
		t.Fatalf("rollout status before the ack: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "payments/db version 1: 0 of 1 containers hold it, waiting") {
		t.Fatalf("no progress line (not a terminal: plain lines):\n%s", out)
	}
	agent.Ack("c1")
	if out := s.MustCLI(t, "", "rollout", "status", "payments/db", "--timeout", "10s"); !strings.HasPrefix(out, "payments/db version 1: 1 of 1 containers hold it (") {
		t.Fatalf("rollout status: %q", out)
	}

	// secret show --watch follows a put until Ctrl-C.
	watch := exec.Command(testkit.Bin(t, "coffer"), "secret", "show", "payments/db", "--watch", "--interval", "100ms")
	watch.Env = append(os.Environ(), "COFFER_ADDR=https://"+s.Addr, "COFFER_TOKEN="+s.Token, "COFFER_CACERT="+s.CA)
	var watched syncBuffer
	watch.Stdout, watch.Stderr = &watched, &watched
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, &watched, "Current:  1")

	// A new version: containers that hold it rotate.
	out = s.MustCLI(t, v2, "secret", "put", "payments/db", "--dry-run")
	if !strings.Contains(out, "payments/db: version 2 would be stored (now version 1)") || !strings.Contains(out, "node-1  hostile-c1  c1  rotate  payments/db  /run/secrets/db  web-db") {
		t.Fatalf("put --dry-run:\n%s", out)
	}
	s.MustCLI(t, v2, "secret", "put", "payments/db")
	agent.WaitFiles("c1", "db=payments/db@2")
	waitOutput(t, &watched, "Current:  2")
	watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Fatalf("secret show --watch after Ctrl-C: %v\n%s", err, watched.String())
	}
	if n := strings.Count(watched.String(), "--- "); n < 2 {
		t.Fatalf("--watch printed %d states:\n%s", n, watched.String())
	}

	if _, errOut, code := s.CLI(t, "", "rollout", "status", "payments/db", "--timeout", "1s"); !serverRefused(code) || !strings.Contains(errOut, "hostile-c1  c1  version 1 (newer state sent, not acknowledged)") {
		t.Fatalf("rollout status of version 2: exit %d %s", code, errOut)
	}
	if out := s.MustCLI(t, "", "rollout", "status", "payments/db", "--version", "1", "--timeout", "5s"); !strings.Contains(out, "1 of 1 containers hold it") {
		t.Fatalf("rollout status --version 1: %q", out)
	}
	if _, errOut, code := s.CLI(t, "", "rollout", "status", "payments/db", "--version", "9"); !serverRefused(code) || !strings.Contains(errOut, "secret payments/db has no version 9 (the current version is 2)") {
		t.Fatalf("rollout status --version 9: exit %d %s", code, errOut)
	}
	if _, errOut, code := s.CLI(t, "", "rollout", "status", "payments/none"); !serverRefused(code) || !strings.Contains(errOut, "not found") {
		t.Fatalf("rollout status of a missing secret: exit %d %s", code, errOut)
	}
	if _, _, code := s.CLI(t, "", "rollout", "status", "payments/db", "--timeout", "0s"); code != 2 {
		t.Fatalf("--timeout 0s: exit %d", code)
	}
	agent.Ack("c1")
	s.MustCLI(t, "", "rollout", "status", "payments/db", "--timeout", "10s")

	// Rollback: version 3 is version 1's value, delivered.
	out = s.MustCLI(t, "", "secret", "rollback", "payments/db", "--to", "1", "--dry-run")
	if !strings.Contains(out, "node-1  hostile-c1  c1  rotate  payments/db") {
		t.Fatalf("rollback --dry-run:\n%s", out)
	}
	s.MustCLI(t, "", "secret", "rollback", "payments/db", "--to", "1")
	agent.WaitFiles("c1", "db=payments/db@3")
	if got, ok := agent.Value("payments/db@3"); !ok || string(got) != v1 {
		t.Fatal("version 3 delivered is not version 1's value")
	}

	// Binding dry runs: gain and lose, nothing sent.
	s.MustCLI(t, "k", "secret", "put", "payments/key")
	out = s.MustCLI(t, "", "bind", "create", "web-key", "--secret", "payments/key", "--selector", "app=web", "--dry-run")
	if !strings.Contains(out, "binding web-key would be created") || !strings.Contains(out, "node-1  hostile-c1  c1  gain    payments/key  /run/secrets/key  web-key") {
		t.Fatalf("bind create --dry-run:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "create", "web-new", "--secret", "payments/new", "--selector", "app=web", "--dry-run")
	if !strings.Contains(out, "note: secret payments/new does not exist: nothing is delivered until it does") {
		t.Fatalf("bind create --dry-run of a missing secret:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "update", "web-db", "--selector", "app=api", "--dry-run")
	if !strings.Contains(out, "selector: app=web → app=api") || !strings.Contains(out, "node-1  hostile-c1  c1  lose    payments/db  /run/secrets/db  web-db") {
		t.Fatalf("bind update --dry-run:\n%s", out)
	}
	out = s.MustCLI(t, "", "bind", "rm", "web-db", "--dry-run")
	if !strings.Contains(out, "lose    payments/db") {
		t.Fatalf("bind rm --dry-run:\n%s", out)
	}
	apply := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(apply, []byte("kind: Binding\nname: web-key\nsecret: payments/key\nselector: app=web\n"), 0o600)
	out = s.MustCLI(t, "", "apply", "-f", apply, "--dry-run")
	if !strings.Contains(out, "gain    payments/key") {
		t.Fatalf("apply --dry-run:\n%s", out)
	}
	out = s.MustCLI(t, "", "secret", "rm", "payments/db", "--dry-run")
	if !strings.Contains(out, "node-1  hostile-c1  c1  lose    payments/db  /run/secrets/db  web-db") {
		t.Fatalf("secret rm --dry-run:\n%s", out)
	}
	agent.WaitFiles("c1", "db=payments/db@3") // none of it was sent

	// Soft delete: the container loses the file at once; undelete gives it back.
	s.MustCLI(t, "", "secret", "rm", "payments/db")
	agent.WaitFiles("c1", "")
	out = s.MustCLI(t, "", "secret", "undelete", "payments/db", "--dry-run")
	if !strings.Contains(out, "payments/db: would be restored at version 3") || !strings.Contains(out, "gain    payments/db") {
		t.Fatalf("undelete --dry-run:\n%s", out)
	}
	s.MustCLI(t, "", "secret", "undelete", "payments/db")
	agent.WaitFiles("c1", "db=payments/db@3")
	s.MustCLI(t, "", "secret", "rm", "payments/db", "--purge")
	agent.WaitFiles("c1", "")

	s.Stop()
	assertAbsent(t, "rollout-probe-value", s.Logs(), s.DataDir)
}

// syncBuffer collects a process's output safely.
type syncBuffer = testkit.Buffer

// waitOutput waits until b holds want.
func waitOutput(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !strings.Contains(b.String(), want) {
		select {
		case <-ctx.Done():
			t.Fatalf("output never said %q:\n%s", want, b.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
