package examples_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"coffer/internal/dockertest"
	"coffer/test/testkit"
)

// stack is a coffer-server, an agent serving this test's containers, the
// Docker engine and an image holding the static coffer binary and the
// examples (built FROM the local busybox image: nothing is pulled).
type stack struct {
	t      *testing.T
	docker *dockertest.Env
	srv    *testkit.Server
	agent  *testkit.Proc
	label  string
	image  string
}

func randID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newStack(t *testing.T) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("examples run against Docker")
	}
	d := dockertest.Require(t)
	base := d.Image(t)
	dir := t.TempDir()
	s := &stack{t: t, docker: d, label: "ex-" + randID()}
	s.image = buildImage(t, d, base, "coffer-example/"+s.label+":1")
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"))
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m"))
	s.agent = testkit.Start(t, testkit.Bin(t, "coffer-agent"), "--server", s.srv.Addr, "--ca-cert", s.srv.CA,
		"--state-dir", filepath.Join(dir, "agent"), "--name", "example-host", "--join-token", join,
		"--only-labels", "coffer.test="+s.label)
	s.eventually("agent connected", 30*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})
	return s
}

// buildImage builds ref FROM base with /coffer (CGO_ENABLED=0) and the
// example binaries, and removes it at the end of the test.
func buildImage(t *testing.T, d *dockertest.Env, base, ref string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..")
	ctx := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", ctx+"/", "./cmd/coffer", "./examples/envapp", "./examples/reloadserver", "./examples/dsnapp")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	df := "FROM " + base + "\nCOPY coffer envapp reloadserver dsnapp /\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("docker", "build", "-q", "-t", ref, ctx)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the classic builder never pulls a local FROM
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() { d.Docker(t, "rmi", "-f", ref) })
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	return ref
}

// run starts a container of this test from the example image.
func (s *stack) run(name string, labels map[string]string, cmd ...string) dockertest.ContainerRef {
	s.t.Helper()
	l := map[string]string{"coffer.test": s.label}
	for k, v := range labels {
		l[k] = v
	}
	return s.docker.Run(s.t, dockertest.RunOpts{Name: name, Labels: l, Image: s.image, Cmd: cmd})
}

func (s *stack) eventually(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s\nagent logs:\n%s", what, tail(s.agent.Logs()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

func (s *stack) logs(id string) string {
	out, _ := s.docker.Docker(s.t, "logs", id)
	return out
}

// waitLog waits until the container's output holds want, and returns it.
func (s *stack) waitLog(id, want string) string {
	s.t.Helper()
	var out string
	s.eventually(fmt.Sprintf("%q in the logs of %s", want, id[:12]), 60*time.Second, func() bool {
		out = s.logs(id)
		return strings.Contains(out, want)
	})
	return out
}

func fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// noValue checks that no value is in docker inspect, the container's
// output, or the argv of any of its processes.
func (s *stack) noValue(c dockertest.ContainerRef, values ...string) {
	s.t.Helper()
	ins, err := s.docker.Docker(s.t, "inspect", c.ID)
	if err != nil {
		s.t.Fatal(err)
	}
	logs := s.logs(c.ID)
	top, _ := s.docker.Docker(s.t, "top", c.ID, "-o", "pid")
	var argvs []string
	for _, f := range strings.Fields(top) {
		if pid, err := strconv.Atoi(f); err == nil {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			argvs = append(argvs, string(b))
		}
	}
	if len(argvs) == 0 {
		s.t.Fatalf("no process of %s found (docker top: %q)", c.Name, top)
	}
	for _, v := range values {
		if strings.Contains(ins, v) {
			s.t.Errorf("value in docker inspect of %s", c.Name)
		}
		if strings.Contains(logs, v) {
			s.t.Errorf("value in the output of %s", c.Name)
		}
		for _, a := range argvs {
			if strings.Contains(a, v) {
				s.t.Errorf("value in the argv of a process of %s", c.Name)
			}
		}
		if strings.Contains(s.agent.Logs(), v) || strings.Contains(s.srv.Logs(), v) {
			s.t.Error("value in the agent's or server's logs")
		}
	}
}

// The env-var app under coffer exec, bound with restart-process: the
// value reaches its environment only, and a rotation restarts the app in
// place (a new process, the same container) with the new value.
func TestEnvAppUnderCofferExecRestartProcess(t *testing.T) {
	s := newStack(t)
	v1, v2 := "ex-db-v1-"+randID(), "ex-db-v2-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "examples/db-password")
	s.srv.MustCLI(t, "", "bind", "create", "ex-db", "--secret", "examples/db-password", "--selector", "app=envapp",
		"--rotation", "restart-process")
	c := s.run("coffer-example-envapp-"+s.label, map[string]string{"app": "envapp"},
		"/coffer", "exec", "--env", "DB_PASSWORD=db-password", "--wait", "--timeout", "60s",
		"--restart-on-change", "--grace", "5s", "--", "/envapp")
	s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v1))
	started, _ := s.docker.Docker(t, "inspect", "--format", "{{.State.StartedAt}} {{.RestartCount}}", c.ID)
	s.noValue(c, v1)

	s.srv.MustCLI(t, v2, "secret", "put", "examples/db-password")
	out := s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v2))
	if !strings.Contains(out, "stopping on terminated") {
		t.Fatalf("the app was not stopped gracefully before its restart:\n%s", out)
	}
	if again, _ := s.docker.Docker(t, "inspect", "--format", "{{.State.StartedAt}} {{.RestartCount}}", c.ID); again != started {
		t.Fatalf("the container restarted (%s, was %s): restart-process restarts the app inside it", again, started)
	}
	s.srv.MustCLI(t, "", "rollout", "status", "examples/db-password", "--timeout", "30s")
	if show := s.srv.MustCLI(t, "", "secret", "show", "examples/db-password"); !strings.Contains(show, "restart-process") {
		t.Fatalf("secret show does not give the contract:\n%s", show)
	}
	s.noValue(c, v1, v2)
}

// The reload server, bound with signal:SIGHUP: after a rotation the agent
// swaps the file, then signals the container's main process through
// Docker, and the server reloads its key without restarting.
func TestReloadServerOnSIGHUP(t *testing.T) {
	s := newStack(t)
	k1, k2 := "ex-key-v1-"+randID(), "ex-key-v2-"+randID()
	s.srv.MustCLI(t, k1, "secret", "put", "examples/tls-key")
	s.srv.MustCLI(t, "", "bind", "create", "ex-tls", "--secret", "examples/tls-key", "--selector", "app=reloadserver",
		"--file", "tls.key", "--rotation", "signal:SIGHUP")
	// coffer exec --wait holds the server back until its key is there,
	// then execs it: the server is the container's main process.
	c := s.run("coffer-example-reload-"+s.label, map[string]string{"app": "reloadserver"},
		"/coffer", "exec", "--wait", "--wait-file", "tls.key", "--timeout", "60s", "--", "/reloadserver", "/run/secrets/tls.key")
	s.waitLog(c.ID, "pid 1 serving with key "+fingerprint(k1))

	s.srv.MustCLI(t, k2, "secret", "put", "examples/tls-key")
	out := s.waitLog(c.ID, "pid 1 reloaded on SIGHUP, serving with key "+fingerprint(k2))
	if strings.Count(out, "serving with key") != 2 {
		t.Fatalf("want one start and one reload:\n%s", out)
	}
	s.eventually("signal logged by the agent", 10*time.Second, func() bool {
		return strings.Contains(s.agent.Logs(), "signalled container after rotation")
	})
	s.srv.MustCLI(t, "", "rollout", "status", "examples/tls-key", "--timeout", "30s")
	s.noValue(c, k1, k2)
}

// A DSN template: the URL is rendered on the server from two secrets
// (a templated secret bound with --template-file), delivered as one file,
// and put in the app's environment by coffer exec; rotating the password
// re-renders the URL and coffer exec restarts the app with it.
func TestDSNTemplateUnderCofferExec(t *testing.T) {
	s := newStack(t)
	p1, p2 := "ex-dsn-p1-"+randID(), "ex-dsn-p2/+"+randID() // the second needs URL escaping
	s.srv.MustCLI(t, "app", "secret", "put", "examples/db-user")
	s.srv.MustCLI(t, p1, "secret", "put", "examples/db-password")
	tf := filepath.Join(t.TempDir(), "dsn.tmpl")
	if err := os.WriteFile(tf, []byte(`postgres://{{ secret "examples/db-user" }}:{{ secret "examples/db-password" | urlquery }}@db.internal:5432/shop`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.srv.MustCLI(t, "", "bind", "create", "ex-dsn", "--template-file", tf, "--secret", "examples/db-url",
		"--selector", "app=dsnapp", "--file", "db.url", "--rotation", "restart-process")
	c := s.run("coffer-example-dsn-"+s.label, map[string]string{"app": "dsnapp"},
		"/coffer", "exec", "--env", "DATABASE_URL=db.url", "--wait", "--timeout", "60s",
		"--restart-on-change", "--grace", "5s", "--", "/dsnapp")
	s.waitLog(c.ID, "connecting to db.internal:5432 as app with password "+fingerprint(p1))
	s.srv.MustCLI(t, p2, "secret", "put", "examples/db-password")
	s.waitLog(c.ID, "connecting to db.internal:5432 as app with password "+fingerprint(p2))
	if show := s.srv.MustCLI(t, "", "secret", "show", "examples/db-url"); !strings.Contains(show, "rendered from examples/db-password, examples/db-user") {
		t.Fatalf("secret show:\n%s", show)
	}
	s.noValue(c, p1, p2)
}

// holderOf is container id's holder of secret in secret show -o json.
func (s *stack) holderOf(secret, id string) (h struct {
	Version uint64 `json:"version"`
	Pending bool   `json:"pending"`
	Process *struct {
		Version uint64 `json:"version"`
		State   string `json:"state"`
	} `json:"process"`
}) {
	s.t.Helper()
	var raw struct {
		Holders []json.RawMessage `json:"holders"`
	}
	if err := json.Unmarshal([]byte(s.srv.MustCLI(s.t, "", "secret", "show", secret, "-o", "json")), &raw); err != nil {
		s.t.Fatal(err)
	}
	for _, r := range raw.Holders {
		var who struct {
			ContainerID string `json:"container_id"`
		}
		json.Unmarshal(r, &who)
		if who.ContainerID == id {
			json.Unmarshal(r, &h)
		}
	}
	return h
}

// waitProcess waits until container id's holder of secret shows its file
// at version file and its process as want ("v1 current"; "" for none).
func (s *stack) waitProcess(secret, id string, file uint64, want string) {
	s.t.Helper()
	s.eventually(fmt.Sprintf("%s holder %s: file v%d, process %q", secret, id[:12], file, want), 60*time.Second, func() bool {
		h := s.holderOf(secret, id)
		p := ""
		if h.Process != nil {
			p = fmt.Sprintf("v%d %s", h.Process.Version, h.Process.State)
		}
		return h.Version == file && p == want
	})
}

// The rollout reports, end to end, when a container has the new file but
// its process still runs with the old environment: envapp under coffer
// exec --restart-on-change ignores SIGTERM, so after a rotation the file is
// v2 and the process v1 (restart pending: secret show, bind ls, rollout
// status wait) until coffer exec kills it after its grace period and starts
// it with v2. A rotation to a value coffer exec cannot use (a NUL byte)
// leaves the process on v2, reported as pending, until a good one. A
// second container runs coffer exec without --restart-on-change: its
// process keeps v1 for life (stale, not pending). Records forged inside a
// container (garbage, huge, a symlink to a file of the host) are refused
// by the agent with a logged reason, and misreport nothing.
func TestRolloutShowsTheProcessUnderCofferExec(t *testing.T) {
	s := newStack(t)
	v1, v2, v4 := "ex-proc-v1-"+randID(), "ex-proc-v2-"+randID(), "ex-proc-v4-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "examples/proc-db")
	s.srv.MustCLI(t, "", "bind", "create", "ex-proc", "--secret", "examples/proc-db", "--selector", "app=envapp-proc",
		"--file", "db-password", "--rotation", "restart-process")
	s.srv.MustCLI(t, "", "bind", "create", "ex-proc-exec", "--secret", "examples/proc-db", "--selector", "app=envapp-exec",
		"--file", "db-password")
	c := s.run("coffer-example-proc-"+s.label, map[string]string{"app": "envapp-proc"},
		"/coffer", "exec", "--env", "DB_PASSWORD=db-password", "--wait", "--timeout", "60s",
		"--restart-on-change", "--grace", "8s", "--", "/envapp", "--ignore-term")
	e := s.run("coffer-example-proc-exec-"+s.label, map[string]string{"app": "envapp-exec"},
		"/coffer", "exec", "--env", "DB_PASSWORD=db-password", "--wait", "--timeout", "60s", "--", "/envapp")
	s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v1))
	s.waitLog(e.ID, "started with DB_PASSWORD "+fingerprint(v1))
	s.waitProcess("examples/proc-db", c.ID, 1, "v1 current")
	s.waitProcess("examples/proc-db", e.ID, 1, "v1 current")

	s.srv.MustCLI(t, v2, "secret", "put", "examples/proc-db")
	s.waitLog(c.ID, "ignoring terminated")
	s.waitProcess("examples/proc-db", c.ID, 2, "v1 restart-pending")
	if h := s.holderOf("examples/proc-db", c.ID); !h.Pending {
		t.Fatal("a container whose process has not restarted is not pending")
	}
	if show := s.srv.MustCLI(t, "", "secret", "show", "examples/proc-db"); !strings.Contains(show, "file v2 but process still on v1 (restart pending)") {
		t.Fatalf("secret show:\n%s", show)
	}
	if ls := s.srv.MustCLI(t, "", "bind", "ls"); !strings.Contains(ls, "restart-process (1 restart pending)") {
		t.Fatalf("bind ls:\n%s", ls)
	}
	if _, errOut, code := s.srv.CLI(t, "", "rollout", "status", "examples/proc-db", "--timeout", "1s"); code == 0 ||
		!strings.Contains(errOut, "process still on v1 (restart pending)") {
		t.Fatalf("rollout status during the grace period: exit %d: %s", code, errOut)
	}
	// coffer exec kills it after --grace and starts it with v2.
	s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v2))
	s.waitProcess("examples/proc-db", c.ID, 2, "v2 current")
	s.waitProcess("examples/proc-db", e.ID, 2, "v1 stale")
	if h := s.holderOf("examples/proc-db", e.ID); h.Pending {
		t.Fatal("a process that keeps its environment for life is pending")
	}
	s.srv.MustCLI(t, "", "rollout", "status", "examples/proc-db", "--timeout", "30s")

	// A restart that cannot happen: the new value holds a NUL byte.
	s.srv.MustCLI(t, "bad\x00value", "secret", "put", "examples/proc-db")
	s.waitProcess("examples/proc-db", c.ID, 3, "v2 restart-pending")
	s.srv.MustCLI(t, v4, "secret", "put", "examples/proc-db")
	s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v4))
	s.waitProcess("examples/proc-db", c.ID, 4, "v4 current")

	// Forged records, written by root in the container and read by the
	// agent right after the next delivery (before coffer exec restarts
	// the child and writes a true one): each is refused with its reason.
	cur := uint64(4)
	for _, forge := range []struct{ what, sh, log string }{
		{"garbage", "printf 'garbage\\000\\377' > /run/secrets/.coffer-exec", "not a JSON record"},
		{"huge", "dd if=/dev/zero of=/run/secrets/.coffer-exec bs=1024 count=1024 2>/dev/null", "larger than"},
		{"symlink", "ln -sf /etc/shadow /run/secrets/.coffer-exec", "is not a regular file"},
	} {
		s.waitProcess("examples/proc-db", c.ID, cur, fmt.Sprintf("v%d current", cur)) // the last restart is over
		if out, err := s.docker.Docker(t, "exec", c.ID, "sh", "-c", "rm -f /run/secrets/.coffer-exec; "+forge.sh); err != nil {
			t.Fatalf("%s: %v %s", forge.what, err, out)
		}
		v := "ex-proc-forge-" + randID()
		s.srv.MustCLI(t, v, "secret", "put", "examples/proc-db")
		cur++
		s.eventually("the agent refusing the "+forge.what+" record", 60*time.Second, func() bool {
			return strings.Contains(s.agent.Logs(), "coffer exec record in the container refused") && strings.Contains(s.agent.Logs(), forge.log)
		})
		s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v))
	}
	if strings.Contains(s.agent.Logs(), "root:") {
		t.Fatal("the host's shadow file in the agent's log")
	}
	// The next restart writes a true record again.
	v5 := "ex-proc-v5-" + randID()
	s.srv.MustCLI(t, v5, "secret", "put", "examples/proc-db")
	s.waitLog(c.ID, "started with DB_PASSWORD "+fingerprint(v5))
	s.waitProcess("examples/proc-db", c.ID, cur+1, fmt.Sprintf("v%d current", cur+1))
	s.noValue(c, v1, v2, v4, v5)
	s.noValue(e, v1, v2, v4, v5)
}
