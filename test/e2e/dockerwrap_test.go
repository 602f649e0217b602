package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/container/docker"
	"coffer/internal/dockertest"
	"coffer/internal/hook"
	"coffer/test/testkit"
)

// realRunc is the runc the wrapper execs in this test (Debian's).
const realRunc = "/usr/sbin/runc"

// TestDockerRuntimeWrapper runs coffer-agent against a private dockerd
// that has the runtime wrapper registered (--add-runtime
// coffer=<script running coffer-agent runc>): a `docker run --runtime
// coffer` container's first instruction reads its file (race-free, in a
// tmpfs the host's mount table does not show), rotation reaches it,
// exec, kill and rm go through the wrapper untouched; with the agent down
// a container starts and gets its file once the agent is back
// (fail-open), and one labelled coffer.require-secrets=true is refused
// with a clear error (also while the agent is up and its server is down)
// and starts with its file on `docker start` once it is back; forged
// requests on the hook socket get nothing; the value is on no disk and
// not in docker inspect.
func TestDockerRuntimeWrapper(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with a private dockerd")
	}
	if os.Geteuid() != 0 {
		dockertest.Skip(t, "the runtime wrapper test needs root")
	}
	if _, err := os.Stat(realRunc); err != nil {
		dockertest.Skip(t, "no runc at %s: %v", realRunc, err)
	}
	agentBin := testkit.Bin(t, "coffer-agent")
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	socket := filepath.Join(dir, "hook", "hook.sock")
	wrapper := filepath.Join(dir, "coffer-runc")
	// A second runtime whose hook asks a socket of this test's (probe).
	probeSocket := filepath.Join(dir, "probe", "hook.sock")
	probeWrapper := filepath.Join(dir, "coffer-runc-probe")
	writeWrapper := func(path, socket, host string) {
		t.Helper()
		script := fmt.Sprintf("#!/bin/sh\nexec %s runc --runc %s --hook-socket %s --hook-timeout 4s --docker-host %s -- \"$@\"\n", agentBin, realRunc, socket, host)
		if err := os.WriteFile(path+".new", []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	// The daemon's address is known once it runs.
	writeWrapper(wrapper, socket, "unix:///nonexistent")
	writeWrapper(probeWrapper, probeSocket, "unix:///nonexistent")
	daemon := dockertest.StartDaemonWithRuntimes(t, map[string]string{"coffer": wrapper, "coffer-probe": probeWrapper})
	writeWrapper(wrapper, socket, daemon.Host)
	writeWrapper(probeWrapper, probeSocket, daemon.Host)
	d := daemon.Env()
	image := d.Image(t)

	t.Run("the list answers while dockerd holds the container's lock", func(t *testing.T) {
		probeStartLock(t, d, daemon.Host, probeSocket, image)
	})

	s := &stack{t: t, docker: d, dir: dir, label: "e2e-" + randID()}
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"))
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m"))
	agentArgs := []string{"--docker-host", daemon.Host, "--hook-socket", socket,
		"--server", s.srv.Addr, "--ca-cert", s.srv.CA, "--state-dir", filepath.Join(dir, "agent"), "--name", "docker-wrap-host",
		"--log-level", "debug", "--only-labels", "coffer.test=" + s.label}
	s.agent = testkit.Start(t, agentBin, append(agentArgs, "--join-token", join)...)
	s.eventually("agent connected", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})
	s.eventually("hook socket", 10*time.Second, func() bool { _, err := os.Stat(socket); return err == nil })

	v1, v2 := "wrap-v1-"+randID(), "wrap-v2-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "shop/db-password")
	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password", "--selector", "app=web")
	labels := map[string]string{"coffer.test": s.label, "app": "web"}
	strictLabels := map[string]string{"coffer.test": s.label, "app": "web", hook.RequireLabel: "true"}
	// The first instruction of a detached container reports the file's
	// size, never its value (the container's log is on the daemon's disk),
	// and the mount's options.
	present := []string{"sh", "-c", "test -s /run/secrets/db-password && echo PRESENT $(wc -c < /run/secrets/db-password) || echo MISSING; grep ' /run/secrets ' /proc/self/mountinfo || echo NOMOUNT; sleep 3600"}
	firstLine := func(id string) string {
		t.Helper()
		var out string
		s.eventually("first instruction's output", 30*time.Second, func() bool {
			out, _ = d.Docker(t, "logs", id)
			return strings.Contains(out, "PRESENT") || strings.Contains(out, "MISSING")
		})
		return out
	}
	runWrapped := func(l map[string]string, cmd []string, extra ...string) dockertest.ContainerRef {
		t.Helper()
		return d.Run(t, dockertest.RunOpts{Labels: l, Cmd: cmd, Args: append([]string{"--runtime", "coffer"}, extra...)})
	}
	// tryRun runs a wrapped container that may be refused: the error of
	// `docker run`, and the container (created either way) to start again.
	tryRun := func(l map[string]string) (string, error) {
		t.Helper()
		name := "coffer-test-" + randID()
		args := []string{"run", "-d", "--network", "none", "--runtime", "coffer", "--name", name}
		for k, v := range l {
			args = append(args, "--label", k+"="+v)
		}
		_, err := d.Docker(t, append(append(args, image), present...)...)
		t.Cleanup(func() { d.Remove(t, name) })
		return name, err
	}
	var ids []string

	// Race-free: the first instruction of an attached container cats its
	// file (its output reaches only this test: no log driver).
	out, err := d.Docker(t, append([]string{"run", "--rm", "--log-driver", "none", "--network", "none", "--runtime", "coffer",
		"--label", "coffer.test=" + s.label, "--label", "app=web", image}, "cat", "/run/secrets/db-password")...)
	if err != nil || out != v1 {
		t.Fatalf("the first instruction did not read the file: %v (got %d bytes, want %d)\nagent:\n%s", err, len(out), len(v1), tail(s.agent.Logs()))
	}
	web := runWrapped(labels, present)
	ids = append(ids, web.ID)
	out = firstLine(web.ID)
	if !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v1))) {
		t.Fatalf("the first instruction did not see its file: %q\nagent:\n%s", out, tail(s.agent.Logs()))
	}
	for _, opt := range []string{"tmpfs", "nosuid", "nodev", "noexec", "noswap"} {
		if !strings.Contains(out, opt) {
			t.Errorf("the /run/secrets mount lacks %s: %q", opt, out)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), "/run/secrets ") {
		t.Errorf("the container's tmpfs shows in the host's mount table")
	}
	if rt, _ := d.Docker(t, "inspect", "--format", "{{.HostConfig.Runtime}}", web.ID); rt != "coffer" {
		t.Fatalf("runtime %q", rt)
	}
	// A container the agent does not serve starts as usual, without files.
	stranger := runWrapped(map[string]string{"app": "web"}, present)
	if out := firstLine(stranger.ID); !strings.Contains(out, "MISSING") || !strings.Contains(out, "NOMOUNT") {
		t.Errorf("a container of no served label got a file or a mount: %q", out)
	}

	// Rotation reaches it; exec, kill, rm go through the wrapper.
	s.srv.MustCLI(t, v2, "secret", "put", "shop/db-password")
	s.waitContent(web.ID, "db-password", v2)
	// The wrapper's own environment stays out of the container.
	if env, err := d.Exec(t, web.ID, "cat", "/proc/1/environ"); err != nil || strings.Contains(env, "COFFER") {
		t.Errorf("the container's environment: %q %v", env, err)
	}
	// A restart runs the hook again: its first instruction sees the file.
	if _, err := d.Docker(t, "restart", "-t", "0", web.ID); err != nil {
		t.Fatalf("docker restart through the wrapper: %v", err)
	}
	s.eventually("the restarted container's first instruction", 30*time.Second, func() bool {
		out, _ := d.Docker(t, "logs", web.ID)
		return strings.Count(out, "PRESENT")+strings.Count(out, "MISSING") >= 2
	})
	if out, _ := d.Docker(t, "logs", web.ID); strings.Count(out, "PRESENT") != 2 || strings.Contains(out, "MISSING") {
		t.Errorf("after docker restart: %q", out)
	}
	s.waitContent(web.ID, "db-password", v2)
	if out, err := d.Exec(t, web.ID, "id", "-u"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("docker exec through the wrapper: %q %v", out, err)
	}
	if _, err := d.Docker(t, "kill", web.ID); err != nil {
		t.Fatalf("docker kill through the wrapper: %v", err)
	}
	if st, _ := d.Docker(t, "inspect", "--format", "{{.State.Status}}", web.ID); st != "exited" {
		t.Errorf("after kill: %s", st)
	}
	if _, err := d.Docker(t, "rm", web.ID); err != nil {
		t.Fatalf("docker rm through the wrapper: %v", err)
	}
	ids = ids[:0]

	t.Run("hostile socket caller", func(t *testing.T) {
		ask := func(st hook.State) hook.Reply {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := hook.Ask(ctx, socket, st)
			if err != nil {
				t.Fatalf("ask: %v", err)
			}
			if strings.Contains(fmt.Sprint(r), v1) || strings.Contains(fmt.Sprint(r), v2) {
				t.Fatalf("a reply holds the value: %+v", r)
			}
			return r
		}
		// A bound container that is created and not started (the list says
		// "created", as while its hook runs), claimed with a pid the
		// caller controls: a process of the host, a running container of
		// its own.
		pending, err := d.Docker(t, "create", "--network", "none", "--runtime", "coffer", "--label", "coffer.test="+s.label, "--label", "app=web", image, "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Remove(t, pending) })
		running := runWrapped(labels, []string{"sleep", "3600"})
		mine := d.Run(t, dockertest.RunOpts{Labels: map[string]string{"coffer.test": s.label}})
		sleeper := exec.Command("sleep", "60")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
		for name, st := range map[string]hook.State{
			"host process":                 {ID: pending, PID: sleeper.Process.Pid},
			"own container's process":      {ID: pending, PID: mine.PID},
			"running container":            {ID: running.ID, PID: running.PID},
			"own running container":        {ID: mine.ID, PID: mine.PID},
			"unknown container":            {ID: strings.Repeat("ab", 32), PID: sleeper.Process.Pid},
			"the caller's own pid and ns":  {ID: pending, PID: os.Getpid()},
			"pid 2 (not in the container)": {ID: pending, PID: 2},
			"a forged pod sandbox":         {ID: pending, PID: mine.PID, Annotations: map[string]string{hook.AnnotationSandboxID: "x"}},
			"a short id":                   {ID: pending[:12], PID: mine.PID},
		} {
			r := ask(st)
			if r.Ready {
				t.Errorf("%s: the agent reports the files written: %+v", name, r)
			}
			if r.Message == "" {
				t.Errorf("%s: no reason given", name)
			}
			t.Logf("%s: %s", name, r.Message)
		}
		if _, ok := s.read(mine.ID, "db-password"); ok {
			t.Error("the caller's own container got the secret")
		}
		if mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", sleeper.Process.Pid)); strings.Contains(string(mi), "/run/secrets ") {
			t.Error("a tmpfs was mounted where the caller's process sees it")
		}
		s.waitContent(running.ID, "db-password", v2) // the real one is served
	})

	// Fail-open: with the agent down, a container starts without its
	// file, which follows once the agent is back.
	s.agent.Stop()
	late := runWrapped(labels, present)
	ids = append(ids, late.ID)
	if out := firstLine(late.ID); !strings.Contains(out, "MISSING") {
		t.Errorf("with the agent down: %q", out)
	}
	// Fail-closed: one labelled coffer.require-secrets=true is refused,
	// by the hook alone, with a clear error.
	strict, err := tryRun(strictLabels)
	if err == nil || !strings.Contains(err.Error(), "not started") || !strings.Contains(err.Error(), "coffer-agent unreachable") {
		t.Fatalf("a container requiring its secrets started while the agent was down: %v", err)
	}
	t.Logf("refused as: %v", err)
	s.agent = testkit.Start(t, agentBin, agentArgs...)
	s.waitContent(late.ID, "db-password", v2)
	s.eventually("hook socket back", 10*time.Second, func() bool { _, err := os.Stat(socket); return err == nil })
	if _, err := d.Docker(t, "start", strict); err != nil {
		t.Fatalf("docker start once the agent is back: %v\nagent:\n%s", err, tail(s.agent.Logs()))
	}
	ids = append(ids, strict)
	if out := firstLine(strict); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v2))) {
		t.Errorf("the retry's first instruction did not see its file: %q", out)
	}

	// Fail-closed with the agent up and its server down: the agent
	// refuses; `docker start` works once the server is back.
	s.srv.Stop()
	s.eventually("agent disconnected", 20*time.Second, func() bool { return strings.Contains(s.agent.Logs(), "no server stream") })
	strict2, err := tryRun(strictLabels)
	if err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("a container requiring its secrets started while the server was down: %v", err)
	}
	t.Logf("refused as: %v", err)
	open := runWrapped(labels, present)
	ids = append(ids, open.ID)
	if out := firstLine(open.ID); !strings.Contains(out, "MISSING") {
		t.Errorf("with the server down: %q", out)
	}
	s.srv = testkit.StartServerAt(t, s.srv.Addr, s.srv.DataDir)
	s.eventually("the strict container started", 40*time.Second, func() bool {
		_, err := d.Docker(t, "start", strict2)
		if err != nil {
			time.Sleep(300 * time.Millisecond)
		}
		return err == nil
	})
	ids = append(ids, strict2)
	if out := firstLine(strict2); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v2))) {
		t.Errorf("the retry's first instruction did not see its file: %q", out)
	}

	for _, id := range ids {
		out, err := d.Docker(t, "inspect", id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, v1) || strings.Contains(out, v2) {
			t.Errorf("docker inspect of %s shows the value", id[:12])
		}
	}
	s.srv.Stop()
	s.agent.Stop()
	for _, v := range []string{v1, v2} {
		for _, root := range []string{daemon.Dir, dir} {
			if hits := grepTree(root, v); len(hits) > 0 {
				t.Errorf("value found on disk: %v", hits)
			}
		}
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) {
			t.Error("value in logs")
		}
	}
	if _, err := os.Stat(socket); err == nil {
		t.Error("the hook socket outlived the agent")
	}
}

// probeStartLock answers the hook of one `docker run --runtime
// coffer-probe` itself: while the hook waits, dockerd holds the
// container's lock (its start is under way), and the agent's way of
// identifying the container, docker.Runtime.Creating (the list by id),
// answers, where an inspect waits until it is given up.
func probeStartLock(t *testing.T, d *dockertest.Env, host, socket, image string) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rt, err := docker.New(docker.Config{Host: host})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	type result struct {
		id          string
		creating    error
		labels      map[string]string
		inspect     error
		inspectTook time.Duration
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() { done <- r }()
		conn, err := ln.Accept()
		if err != nil {
			r.creating = err
			return
		}
		defer conn.Close()
		var req struct {
			State hook.State `json:"state"`
		}
		if err := json.NewDecoder(conn).Decode(&req); err != nil {
			r.creating = err
			return
		}
		r.id = req.State.ID
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		info, err := rt.Creating(ctx, r.id)
		cancel()
		r.creating, r.labels = err, info.Labels
		ctx, cancel = context.WithTimeout(context.Background(), 1500*time.Millisecond)
		start := time.Now()
		_, r.inspect = rt.Inspect(ctx, r.id)
		r.inspectTook = time.Since(start)
		cancel()
		_ = json.NewEncoder(conn).Encode(hook.Reply{V: 1, Start: true, Ready: true})
	}()
	name := "coffer-test-probe-" + randID()
	t.Cleanup(func() { d.Remove(t, name) })
	if _, err := d.Docker(t, "run", "-d", "--network", "none", "--runtime", "coffer-probe", "--name", name, "--label", "probe=yes", image, "sleep", "60"); err != nil {
		t.Fatalf("docker run: %v", err)
	}
	r := <-done
	if r.creating != nil || r.labels["probe"] != "yes" {
		t.Fatalf("Creating during the start: %v %v", r.creating, r.labels)
	}
	if !errors.Is(r.inspect, context.DeadlineExceeded) {
		t.Errorf("an inspect during the start returned (%v after %v): dockerd no longer holds the container's lock there, and this test proves nothing", r.inspect, r.inspectTook)
	}
	t.Logf("during the hook: the list answered; the inspect was given up after %v (%v)", r.inspectTook.Round(time.Millisecond), r.inspect)
}
