package nri_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
	"coffer/internal/containerdtest"
	"coffer/internal/deliver/tmpfs"
	"coffer/internal/nri"
	"coffer/internal/secret"
)

func TestMain(m *testing.M) {
	tmpfs.Init()
	code := m.Run()
	containerdtest.StopShared()
	os.Exit(code)
}

// cacheAgent stands for the agent: it holds, in memory, the files of the
// containers whose pods carry app=web, and writes them with the real
// Deliverer when asked.
type cacheAgent struct {
	del      *tmpfs.Deliverer
	value    string
	notReady bool // as if the server had not answered

	mu       sync.Mutex
	prepared map[string]container.Info
	started  map[string]error
	forgot   map[string]bool
}

func (a *cacheAgent) Prepare(info container.Info) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if info.Labels["skip"] == "yes" {
		return false
	}
	a.prepared[info.ID] = info
	return true
}

func (a *cacheAgent) Forget(_ context.Context, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.forgot == nil {
		a.forgot = map[string]bool{}
	}
	a.forgot[id] = true
}

func (a *cacheAgent) StartNow(ctx context.Context, info container.Info, limit time.Duration) bool {
	a.mu.Lock()
	notReady := a.notReady
	a.mu.Unlock()
	if notReady {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var files []secret.File
	if info.Labels["app"] == "web" {
		files = []secret.File{{Secret: "shop/db", Version: 1, Name: "db-password", Mode: 0o444, Value: secret.Value(a.value)}}
	}
	err := a.del.Apply(ctx, info, files)
	a.mu.Lock()
	a.started[info.ID] = err
	a.mu.Unlock()
	return err == nil
}

// TestFirstInstructionSeesFile: with the plugin registered in containerd
// 2.2.9, a container's first instruction reads its file at /run/coffer (a
// tmpfs the plugin added at create, noswap,nosuid,nodev,noexec), the pod's
// identity reached the agent at create, and a container the agent does not
// serve gets no mount.
func TestFirstInstructionSeesFile(t *testing.T) {
	d := containerdtest.Shared(t, containerdtest.V2)
	rt, err := containerd.New(containerd.Config{Socket: d.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	del, err := tmpfs.New(tmpfs.Config{Dir: "/run/coffer"})
	if err != nil {
		t.Fatal(err)
	}
	defer del.Close()
	ag := &cacheAgent{del: del, value: "nri-first-read-value", prepared: map[string]container.Info{}, started: map[string]error{}}
	p, err := nri.New(nri.Config{Socket: d.NRISocket, Dir: "/run/coffer", Agent: ag, Identity: rt,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitRegistered(t, p)

	pod := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-0", Labels: map[string]string{"app": "web"}})
	id := d.RunContainer(t, pod, containerdtest.Container{Name: "web", Cmd: []string{"sh", "-c",
		"cat /run/coffer/db-password || echo MISSING; grep ' /run/coffer ' /proc/self/mountinfo; sleep 3600"}})
	out := waitLog(t, d, pod, "web")
	if !strings.Contains(out, ag.value) {
		t.Fatalf("first instruction did not see the file: %q", out)
	}
	for _, opt := range []string{"nosuid", "nodev", "noexec", "noswap", "tmpfs"} {
		if !strings.Contains(out, opt) {
			t.Errorf("the /run/coffer mount lacks %s: %q", opt, out)
		}
	}
	ag.mu.Lock()
	info, ok := ag.prepared[id]
	startErr, started := ag.started[id]
	ag.mu.Unlock()
	if !ok || info.Labels[containerd.LabelNamespace] != "shop" || info.Labels["app"] != "web" || info.Labels[containerd.LabelContainer] != "web" || info.PID != 0 {
		t.Errorf("prepared %v %+v", ok, info)
	}
	if !started || startErr != nil {
		t.Errorf("StartNow: called %v, err %v", started, startErr)
	}

	skip := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "skip", Labels: map[string]string{"skip": "yes"}})
	d.RunContainer(t, skip, containerdtest.Container{Name: "web", Cmd: []string{"sh", "-c", "grep ' /run/coffer ' /proc/self/mountinfo || echo NOMOUNT; sleep 3600"}})
	if out := waitLog(t, d, skip, "web"); !strings.Contains(out, "NOMOUNT") {
		t.Errorf("a container the agent does not serve got a mount: %q", out)
	}
}

// TestPluginDownFailsOpen: with no plugin, containers start (without the
// mount), and the plugin registers when it comes (again, after a
// containerd restart).
func TestPluginDownFailsOpen(t *testing.T) {
	d := containerdtest.Shared(t, containerdtest.V2)
	pod := d.RunPod(t, containerdtest.Pod{Labels: map[string]string{"app": "web"}})
	d.RunContainer(t, pod, containerdtest.Container{Name: "web", Cmd: []string{"sh", "-c", "echo STARTED; sleep 3600"}})
	if out := waitLog(t, d, pod, "web"); !strings.Contains(out, "STARTED") {
		t.Fatalf("container did not start without the plugin: %q", out)
	}

	rt, err := containerd.New(containerd.Config{Socket: d.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	del, err := tmpfs.New(tmpfs.Config{Dir: "/run/coffer"})
	if err != nil {
		t.Fatal(err)
	}
	defer del.Close()
	ag := &cacheAgent{del: del, value: "after-restart", prepared: map[string]container.Info{}, started: map[string]error{}}
	p, err := nri.New(nri.Config{Socket: d.NRISocket, Dir: "/run/coffer", Agent: ag, Identity: rt, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitRegistered(t, p)
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Connected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, p)
	pod2 := d.RunPod(t, containerdtest.Pod{Labels: map[string]string{"app": "web"}})
	d.RunContainer(t, pod2, containerdtest.Container{Name: "web", Cmd: []string{"sh", "-c", "cat /run/coffer/db-password || echo MISSING; echo; sleep 3600"}})
	if out := waitLog(t, d, pod2, "web"); !strings.Contains(out, "after-restart") {
		t.Fatalf("after a containerd restart the plugin did not deliver: %q", out)
	}
}

// waitRegistered waits until the plugin is registered with NRI.
func waitRegistered(t *testing.T, p *nri.Plugin) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !p.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("the plugin did not register within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitLog(t *testing.T, d *containerdtest.Daemon, p containerdtest.PodRef, name string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := d.Log(t, p, name, 0)
		if out != "" {
			time.Sleep(200 * time.Millisecond) // the rest of the lines
			return d.Log(t, p, name, 0)
		}
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir(p.Config.GetLogDirectory())
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("container %s wrote nothing within 30s; log dir %s holds %v; containerd log:\n%s", name, p.Config.GetLogDirectory(), names, d.Tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRequireSecrets: a pod annotated coffer/require-secrets=true does not
// start a container whose files the agent does not hold, and its retry
// (the kubelet's, a new attempt) starts with its file once they are there;
// a pod without the annotation starts regardless (fail-open).
func TestRequireSecrets(t *testing.T) {
	d := containerdtest.Shared(t, containerdtest.V2)
	rt, err := containerd.New(containerd.Config{Socket: d.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	del, err := tmpfs.New(tmpfs.Config{Dir: "/run/coffer"})
	if err != nil {
		t.Fatal(err)
	}
	defer del.Close()
	ag := &cacheAgent{del: del, value: "required-value", notReady: true, prepared: map[string]container.Info{}, started: map[string]error{}}
	p, err := nri.New(nri.Config{Socket: d.NRISocket, Dir: "/run/coffer", Agent: ag, Identity: rt})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitRegistered(t, p)

	cmd := []string{"sh", "-c", "cat /run/coffer/db-password || echo MISSING; echo; sleep 3600"}
	strict := d.RunPod(t, containerdtest.Pod{Name: "strict", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{nri.RequireAnnotation: "true"}})
	refused, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Cmd: cmd})
	if err == nil || !strings.Contains(err.Error(), nri.RequireAnnotation) {
		t.Fatalf("a pod requiring its secrets started without them: %v", err)
	}
	// The refused container is forgotten (it was reported at create).
	deadline := time.Now().Add(10 * time.Second)
	for {
		ag.mu.Lock()
		forgot := ag.forgot[refused]
		ag.mu.Unlock()
		if forgot {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refused container was not forgotten")
		}
		time.Sleep(20 * time.Millisecond)
	}
	lax := d.RunPod(t, containerdtest.Pod{Name: "lax", Labels: map[string]string{"app": "web"}})
	d.RunContainer(t, lax, containerdtest.Container{Name: "web", Cmd: cmd})
	if out := waitLog(t, d, lax, "web"); !strings.Contains(out, "MISSING") {
		t.Errorf("fail-open pod: %q", out)
	}

	ag.mu.Lock()
	ag.notReady = false // the server answered
	ag.mu.Unlock()
	if _, err := d.TryRunContainer(t, strict, containerdtest.Container{Name: "web", Attempt: 1, Cmd: cmd}); err != nil {
		t.Fatalf("the retry did not start: %v", err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(d.Log(t, strict, "web", 1), "required-value") {
		if time.Now().After(deadline) {
			t.Fatalf("the retry's first instruction did not see its file: %q", d.Log(t, strict, "web", 1))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
