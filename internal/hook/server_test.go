package hook

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
)

// The socket is refused where someone else could swap or read it, made
// 0600, and a stale one of the agent's own is replaced.
func TestListen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "hook.sock")
	ln, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Dir(sock)); fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v", fi.Mode())
	}
	if _, err := listen(sock); err == nil || !strings.Contains(err.Error(), "another agent listens") {
		t.Errorf("a second agent on the socket: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a stale socket stays behind
	ln, err = listen(sock)
	if err != nil {
		t.Fatalf("a stale socket of our own: %v", err)
	}
	ln.Close()

	// A socket of another user, a file that is not a socket, a directory
	// others may write, a symlinked directory.
	other := filepath.Join(dir, "other")
	os.Mkdir(other, 0o700)
	l2, err := net.Listen("unix", filepath.Join(other, "hook.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	l2.Close()
	os.Lchown(filepath.Join(other, "hook.sock"), 65534, 65534)
	os.WriteFile(filepath.Join(dir, "file.sock"), nil, 0o600)
	wide := filepath.Join(dir, "wide")
	os.Mkdir(wide, 0o777)
	os.Chmod(wide, 0o777)
	nobody := filepath.Join(dir, "nobody")
	os.Mkdir(nobody, 0o700)
	os.Chown(nobody, 65534, 65534)
	os.Symlink(other, filepath.Join(dir, "link"))
	for path, want := range map[string]string{
		filepath.Join(other, "hook.sock"):  "owned by uid 65534",
		filepath.Join(dir, "file.sock"):    "not a socket",
		filepath.Join(wide, "hook.sock"):   "writable by group or others",
		filepath.Join(nobody, "hook.sock"): "owned by uid 65534",
		filepath.Join(dir, "link", "x"):    "not a directory",
		"relative.sock":                    "absolute",
	} {
		if ln, err := listen(path); err == nil || !strings.Contains(err.Error(), want) {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("listen(%s): %v, want %q", path, err, want)
		}
	}
}

// fakes for the server.
type fakeRuntime struct {
	c   containerd.Creating
	err error
}

func (r *fakeRuntime) Creating(context.Context, string) (containerd.Creating, error) {
	return r.c, r.err
}

type fakeAgent struct {
	mu       sync.Mutex
	prepared int
	holds    bool
	forgot   []string
	started  int
}

func (a *fakeAgent) Prepare(container.Info) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prepared++
	return true
}
func (a *fakeAgent) Holds(string) bool { a.mu.Lock(); defer a.mu.Unlock(); return a.holds }
func (a *fakeAgent) StartNow(context.Context, container.Info, time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started++
	return true
}
func (a *fakeAgent) Forget(_ context.Context, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forgot = append(a.forgot, id)
}

func startServer(t *testing.T, ag Agent, rt Runtime) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the socket checks the caller is root")
	}
	sock := filepath.Join(t.TempDir(), "hook.sock")
	s, err := New(Config{Socket: sock, Agent: ag, Runtime: rt, Gate: NewGate(&recorder{}, nil), Wait: 100 * time.Millisecond, Limit: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// A caller who names a container the runtime is creating, with
// annotations that match, but a pid that is not the container's held
// process, gets a refusal, and the container is not even reported to the
// agent (nor to its server).
func TestServerRefusesForgedPID(t *testing.T) {
	ag := &fakeAgent{holds: true}
	rt := &fakeRuntime{c: containerd.Creating{Info: container.Info{ID: testID, Name: "shop/web/web"}, SandboxID: "sb1",
		PodAnnotations: map[string]string{RequireAnnotation: "true"}}}
	sock := startServer(t, ag, rt)
	sleeper, _ := os.StartProcess("/bin/sleep", []string{"sleep", "30"}, &os.ProcAttr{})
	defer func() { sleeper.Kill(); sleeper.Wait() }()
	ask := func(st State) Reply {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := Ask(ctx, sock, st)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for name, st := range map[string]State{
		"own pid":          {ID: testID, PID: os.Getpid(), Annotations: map[string]string{AnnotationSandboxID: "sb1"}},
		"host process":     {ID: testID, PID: sleeper.Pid},
		"forged sandbox":   {ID: testID, PID: sleeper.Pid, Annotations: map[string]string{AnnotationSandboxID: "sb2"}},
		"forged container": {ID: testID, PID: sleeper.Pid, Annotations: map[string]string{AnnotationContainerName: "db"}},
	} {
		r := ask(st)
		if r.Start || r.Ready || !r.Required || !strings.Contains(r.Message, "refused") {
			t.Errorf("%s: %+v", name, r)
		}
	}
	if ag.prepared != 0 || ag.started != 0 {
		t.Errorf("a forged request reached the agent: prepared %d, started %d", ag.prepared, ag.started)
	}

	// Unknown to the runtime: the state's own annotation decides.
	rt.err = containerd.ErrNotFound
	if r := ask(State{ID: testID, PID: sleeper.Pid}); !r.Start || r.Ready || !strings.Contains(r.Message, "not identified") {
		t.Errorf("unknown container: %+v", r)
	}
	if r := ask(State{ID: testID, PID: sleeper.Pid, Annotations: map[string]string{RequireAnnotation: "true"}}); r.Start {
		t.Errorf("unknown container of a pod that requires its secrets: %+v", r)
	}
}

// Bad requests get an answer that names the problem, and change nothing;
// a caller that is not root gets nothing but a refusal, even where the
// socket's mode would let it connect.
func TestServerBadRequests(t *testing.T) {
	ag := &fakeAgent{holds: true}
	sock := startServer(t, ag, &fakeRuntime{err: containerd.ErrNotFound})
	raw := func(payload string) Reply {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() { c.Write([]byte(payload)); c.(*net.UnixConn).CloseWrite() }()
		var r Reply
		if err := readJSON(c, maxReplyBytes, &r); err != nil {
			t.Fatalf("no reply: %v", err)
		}
		return r
	}
	for payload, want := range map[string]string{
		"":            "bad request",
		"\x00garbage": "bad request",
		`{"v":1,"state":{"id":"` + strings.Repeat("a", maxRequestBytes) + `"}}`: "larger than",
		`{"v":2,"state":{}}`:                              "protocol version",
		`{"v":1,"state":{"id":"short","pid":5}}`:          `field "id"`,
		`{"v":1,"state":{"id":"` + testID + `","pid":0}}`: `field "pid"`,
	} {
		if r := raw(payload); !strings.Contains(r.Message, want) || r.Ready || !r.Start {
			t.Errorf("%.40q: %+v, want a message with %q", payload, r, want)
		}
	}
	if ag.prepared != 0 {
		t.Errorf("bad requests reached the agent: %d", ag.prepared)
	}

	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("python3 missing: the non-root caller is not tried")
	}
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(sock)), 0o755)
	os.Chmod(sock, 0o666)
	cmd := exec.Command(py, "-c", `import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"v":1,"state":{"id":"`+testID+`","pid":4242}}'); s.shutdown(socket.SHUT_WR)
print(s.recv(65536).decode())`, sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "not root") {
		t.Errorf("a non-root caller: %v %s", err, out)
	}
}
