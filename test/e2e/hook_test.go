package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/containerdtest"
	"coffer/internal/hook"
	"coffer/test/testkit"
)

// TestContainerdHook runs coffer-agent against Debian's containerd 1.6 (no
// NRI) whose base runtime spec runs `coffer-agent hook` as a createRuntime
// hook: a pod's container sees its file at its first instruction, in a
// tmpfs the host's mount table does not show; rotation and revocation work
// as with NRI; a container starts when the agent is down (its file follows
// once the agent is back); a pod annotated coffer/require-secrets=true is
// refused while the agent (or its server) is down and starts with its file
// on a retry once it is back; callers of the socket who forge a container
// id, pid or annotations get nothing; bad input gets a clear error; the
// value is on no disk.
func TestContainerdHook(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with containerd")
	}
	// A delivery that missed the container's root before pivot_root would
	// create the target directory in the host's /run.
	_, err := os.Stat("/run/coffer")
	hostHadDir := err == nil
	agentBin := testkit.Bin(t, "coffer-agent")
	d := containerdtest.Hooked(t, agentBin, "hook", "--socket", "{socket}", "--timeout", "5s")
	dir := t.TempDir()
	label := "e2e-" + randID()
	s := &stack{t: t, dir: dir, label: label}
	s.srv = testkit.StartServer(t, filepath.Join(dir, "server"))
	join := strings.TrimSpace(s.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m", "--agent-labels", "k8s.node=node-1"))
	agentArgs := []string{"--runtime", "containerd", "--containerd-socket", d.Socket, "--hook-socket", d.HookSocket, "--nri-socket", "",
		"--server", s.srv.Addr, "--ca-cert", s.srv.CA, "--state-dir", filepath.Join(dir, "agent"), "--name", "k8s-hook-node",
		"--node-name", "node-1", "--log-level", "debug", "--only-labels", "coffer.test=" + label}
	s.agent = testkit.Start(t, agentBin, append(agentArgs, "--join-token", join)...)
	s.eventually("agent connected", 20*time.Second, func() bool {
		return strings.Contains(s.srv.MustCLI(t, "", "agent", "ls"), "connected")
	})
	s.eventually("hook socket", 10*time.Second, func() bool { _, err := os.Stat(d.HookSocket); return err == nil })
	if fi, err := os.Stat(d.HookSocket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("hook socket mode: %v %v", fi.Mode(), err)
	}

	v1, v2 := "hook-v1-"+randID(), "hook-v2-"+randID()
	s.srv.MustCLI(t, v1, "secret", "put", "shop/db-password")
	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop,k8s.container=web")
	labels := map[string]string{"coffer.test": label, "app": "web"}
	// The first instruction reports the file's size, never its value (the
	// log is on the host's disk), and the mount's options.
	present := []string{"sh", "-c", "test -s /run/coffer/db-password && echo PRESENT $(wc -c < /run/coffer/db-password) || echo MISSING; grep ' /run/coffer ' /proc/self/mountinfo || echo NOMOUNT; echo DONE; sleep 3600"}
	firstLine := func(p containerdtest.PodRef, attempt uint32) string {
		t.Helper()
		s.eventually("first instruction's output", 30*time.Second, func() bool {
			return strings.Contains(d.Log(t, p, "web", attempt), "DONE")
		})
		return d.Log(t, p, "web", attempt)
	}
	read := func(id string) (string, bool) {
		out, err := d.Exec(t, id, "cat", "/run/coffer/db-password")
		return out, err == nil
	}
	waitContent := func(id, want string) {
		t.Helper()
		s.eventually("content in "+id[:12], 20*time.Second, func() bool { got, ok := read(id); return ok && got == want })
	}

	// Race-free first read.
	web := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-" + label, Labels: labels})
	webID := d.RunContainer(t, web, containerdtest.Container{Name: "web", Cmd: present})
	out := firstLine(web, 0)
	if !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v1))) {
		t.Fatalf("the container's first instruction did not see its file: %q\nagent:\n%s\ncontainerd:\n%s", out, tail(s.agent.Logs()), d.Tail())
	}
	for _, opt := range []string{"tmpfs", "nosuid", "nodev", "noexec", "noswap"} {
		if !strings.Contains(out, opt) {
			t.Errorf("the /run/coffer mount lacks %s: %q", opt, out)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), "/run/coffer") {
		t.Errorf("the container's tmpfs shows in the host's mount table:\n%s", mi)
	}
	// On a read-only root file system too: no delivery after the start
	// could create the directory there, so this sees the hook's work only.
	ro := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "ro-" + label, Labels: labels})
	d.RunContainer(t, ro, containerdtest.Container{Name: "web", Cmd: present, ReadOnlyRoot: true})
	if out := firstLine(ro, 0); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v1))) {
		t.Errorf("on a read-only root, the first instruction did not see its file: %q", out)
	}
	// Pods started at once (as after a node drain): each one's first
	// instruction sees its file.
	var wg sync.WaitGroup
	burst := make([]containerdtest.PodRef, 5)
	for i := range burst {
		burst[i] = d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: fmt.Sprintf("burst-%d-%s", i, label), Labels: labels})
	}
	for _, p := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.TryRunContainer(t, p, containerdtest.Container{Name: "web", Cmd: present, ReadOnlyRoot: true}); err != nil {
				t.Errorf("burst: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, p := range burst {
		if out := firstLine(p, 0); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v1))) {
			t.Errorf("pod %s of a burst: the first instruction did not see its file: %q", p.Config.GetMetadata().GetName(), out)
		}
	}
	// A pod of another namespace with the same labels: no file, no mount.
	other := d.RunPod(t, containerdtest.Pod{Namespace: "other", Name: "web-" + label, Labels: labels})
	otherID := d.RunContainer(t, other, containerdtest.Container{Name: "web", Cmd: present})
	if out := firstLine(other, 0); !strings.Contains(out, "MISSING") || !strings.Contains(out, "NOMOUNT") {
		t.Errorf("a pod of another namespace got a file or a mount: %q", out)
	}

	// Rotation and revocation reach the running container.
	s.srv.MustCLI(t, v2, "secret", "put", "shop/db-password")
	waitContent(webID, v2)
	s.srv.MustCLI(t, "", "bind", "rm", "web-db")
	s.eventually("file revoked", 20*time.Second, func() bool { _, ok := read(webID); return !ok })
	s.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop,k8s.container=web")
	waitContent(webID, v2)

	t.Run("hostile socket caller", func(t *testing.T) {
		ask := func(st hook.State) hook.Reply {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := hook.Ask(ctx, d.HookSocket, st)
			if err != nil {
				t.Fatalf("ask: %v", err)
			}
			if strings.Contains(fmt.Sprint(r), v1) || strings.Contains(fmt.Sprint(r), v2) {
				t.Fatalf("a reply holds the value: %+v", r)
			}
			return r
		}
		// A bound container that is created and not started (the CRI says
		// CONTAINER_CREATED, as while its hook runs), claimed with a pid the
		// caller controls: a process of the host, and a running container of
		// a pod the caller owns.
		pending, err := d.TryRunContainer(t, web, containerdtest.Container{Name: "web", Attempt: 7, CreateOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		mine := d.RunPod(t, containerdtest.Pod{Namespace: "evil", Name: "mine-" + label, Labels: map[string]string{"coffer.test": label}})
		mineID := d.RunContainer(t, mine, containerdtest.Container{Name: "web"})
		sleeper := exec.Command("sleep", "60")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
		forged := map[string]string{hook.AnnotationSandboxID: web.ID, hook.AnnotationContainerName: "web"}
		for name, st := range map[string]hook.State{
			"host process":                 {ID: pending, PID: sleeper.Process.Pid, Annotations: forged},
			"own container's process":      {ID: pending, PID: d.PID(t, mineID), Annotations: forged},
			"running container":            {ID: webID, PID: d.PID(t, webID), Annotations: forged},
			"own container, forged pod":    {ID: mineID, PID: d.PID(t, mineID), Annotations: forged},
			"forged sandbox annotation":    {ID: pending, PID: d.PID(t, mineID), Annotations: map[string]string{hook.AnnotationSandboxID: mine.ID}},
			"unknown container":            {ID: strings.Repeat("ab", 32), PID: sleeper.Process.Pid},
			"the caller's own pid and ns":  {ID: pending, PID: os.Getpid()},
			"pid 1 (not in the container)": {ID: pending, PID: 2},
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
		if _, ok := read(mineID); ok {
			t.Error("the caller's own container got the secret")
		}
		if mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", sleeper.Process.Pid)); strings.Contains(string(mi), "/run/coffer") {
			t.Error("a tmpfs was mounted where the caller's process sees it")
		}

		// Bad input, to the socket and to the hook.
		raw := func(payload []byte) hook.Reply {
			t.Helper()
			c, err := net.Dial("unix", d.HookSocket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() { c.Write(payload); c.(*net.UnixConn).CloseWrite() }()
			var r hook.Reply
			if err := json.NewDecoder(c).Decode(&r); err != nil {
				t.Fatalf("no reply: %v", err)
			}
			return r
		}
		for name, tc := range map[string]struct {
			payload []byte
			want    string
		}{
			"garbage":     {[]byte("\x00\xffnot json"), "bad request"},
			"huge":        {[]byte(`{"v":1,"state":{"id":"` + strings.Repeat("a", 1<<20) + `"}}`), "larger than"},
			"old version": {[]byte(`{"v":0,"state":{}}`), "protocol version"},
			"bad pid":     {[]byte(`{"v":1,"state":{"id":"` + pending + `","pid":-4}}`), `field "pid"`},
		} {
			if r := raw(tc.payload); !strings.Contains(r.Message, tc.want) || r.Ready {
				t.Errorf("%s: reply %+v, want a message with %q", name, r, tc.want)
			}
		}
		for name, tc := range map[string]struct {
			stdin string
			want  string
		}{
			"garbage": {"garbage", "not a JSON object"},
			"empty":   {"", "empty"},
			"huge":    {`{"id":"` + strings.Repeat("a", 1<<20) + `"}`, "larger than"},
			"no pid":  {`{"id":"` + pending + `"}`, `field "pid"`},
		} {
			cmd := exec.Command(agentBin, "hook", "--socket", d.HookSocket)
			cmd.Stdin = strings.NewReader(tc.stdin)
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != hook.ExitUsage || !strings.Contains(string(out), tc.want) {
				t.Errorf("hook with %s stdin: %v %q, want exit %d and %q", name, err, out, hook.ExitUsage, tc.want)
			}
		}
		if _, err := d.Exec(t, webID, "cat", "/run/coffer/db-password"); err != nil {
			t.Errorf("the pod's own container lost its file: %v", err)
		}
	})

	// Fail-open: with the agent down a pod starts (without its file,
	// which follows once the agent is back).
	s.agent.Stop()
	late := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "late-" + label, Labels: labels})
	lateID := d.RunContainer(t, late, containerdtest.Container{Name: "web", Cmd: present})
	if out := firstLine(late, 0); !strings.Contains(out, "MISSING") {
		t.Errorf("with the agent down: %q", out)
	}
	// Fail-closed: a pod that requires its secrets is refused, by the
	// hook alone, while the agent is down.
	strictLabels := map[string]string{"coffer.test": label, "app": "web"}
	strict := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "strict-" + label, Labels: strictLabels,
		Annotations: map[string]string{hook.RequireAnnotation: "true"}})
	if _, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Cmd: present}); err == nil || !strings.Contains(err.Error(), hook.RequireAnnotation) {
		t.Fatalf("a pod requiring its secrets started while the agent was down: %v", err)
	}
	s.agent = testkit.Start(t, agentBin, agentArgs...)
	waitContent(lateID, v2)
	attempt := uint32(0)
	s.eventually("the strict pod's retry started", 30*time.Second, func() bool {
		attempt++
		_, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Attempt: attempt, Cmd: present})
		if err != nil {
			time.Sleep(300 * time.Millisecond) // the kubelet's back-off, shortened
		}
		return err == nil
	})
	if out := firstLine(strict, attempt); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v2))) {
		t.Errorf("the retry's first instruction did not see its file: %q", out)
	}

	// Fail-closed with the agent up and its server down: the agent
	// refuses; the retry starts once the server is back.
	s.srv.Stop()
	s.eventually("agent disconnected", 20*time.Second, func() bool { return strings.Contains(s.agent.Logs(), "no server stream") })
	strict2 := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "strict2-" + label, Labels: strictLabels,
		Annotations: map[string]string{hook.RequireAnnotation: "true"}})
	if _, err := d.TryRunContainer(t, strict2, containerdtest.Container{Name: "web", Cmd: present}); err == nil || !strings.Contains(err.Error(), hook.RequireAnnotation) {
		t.Fatalf("a pod requiring its secrets started while the server was down: %v", err)
	}
	// A pod that does not require them starts.
	open := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "open-" + label, Labels: labels})
	d.RunContainer(t, open, containerdtest.Container{Name: "web", Cmd: present})
	if out := firstLine(open, 0); !strings.Contains(out, "MISSING") {
		t.Errorf("with the server down: %q", out)
	}
	s.srv = testkit.StartServerAt(t, s.srv.Addr, s.srv.DataDir)
	attempt = 0
	s.eventually("the second strict pod's retry started", 40*time.Second, func() bool {
		attempt++
		_, err := d.TryRunContainer(t, strict2, containerdtest.Container{Name: "web", Attempt: attempt, Cmd: present})
		if err != nil {
			time.Sleep(300 * time.Millisecond)
		}
		return err == nil
	})
	if out := firstLine(strict2, attempt); !strings.Contains(out, fmt.Sprintf("PRESENT %d", len(v2))) {
		t.Errorf("the retry's first instruction did not see its file: %q", out)
	}
	_ = otherID

	s.srv.Stop()
	s.agent.Stop()
	for _, v := range []string{v1, v2} {
		for _, root := range []string{d.Dir, dir} {
			if hits := grepTree(root, v); len(hits) > 0 {
				t.Errorf("value found on disk: %v", hits)
			}
		}
		if strings.Contains(s.srv.Logs(), v) || strings.Contains(s.agent.Logs(), v) || strings.Contains(d.Tail(), v) {
			t.Error("value in logs")
		}
	}
	if _, err := os.Stat(d.HookSocket); err == nil {
		t.Error("the hook socket outlived the agent")
	}
	if _, err := os.Stat("/run/coffer"); err == nil && !hostHadDir {
		t.Error("/run/coffer appeared on the host: a delivery went outside a container's root")
	}
}
