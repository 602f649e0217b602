package containerd_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
	"coffer/internal/containerdtest"
	"coffer/internal/deliver/tmpfs"
	"coffer/internal/secret"
)

func TestMain(m *testing.M) {
	tmpfs.Init()
	code := m.Run()
	containerdtest.StopShared()
	os.Exit(code)
}

// kinds are the containerds every test runs against: Debian's 1.6 always,
// 2.2.9 when scripts/test-tools.sh built it (required in CI).
var kinds = []containerdtest.Kind{containerdtest.Debian, containerdtest.V2}

func eachKind(t *testing.T, f func(t *testing.T, d *containerdtest.Daemon)) {
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) { f(t, containerdtest.Shared(t, k)) })
	}
}

// logBuf collects a runtime's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newRuntime(t *testing.T, d *containerdtest.Daemon, log *logBuf) *containerd.Runtime {
	t.Helper()
	var h slog.Handler = slog.DiscardHandler
	if log != nil {
		h = slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	rt, err := containerd.New(containerd.Config{Socket: d.Socket, Logger: slog.New(h), MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// watcher follows a Watch and remembers everything it saw.
type watcher struct {
	t      *testing.T
	events <-chan container.Event
}

func watch(t *testing.T, rt *containerd.Runtime) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := rt.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &watcher{t: t, events: ch}
}

// next waits for the first event that match accepts.
func (w *watcher) next(what string, match func(container.Event) bool) container.Event {
	w.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-w.events:
			if !ok {
				w.t.Fatalf("watch ended waiting for %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			w.t.Fatalf("no %s within 60s", what)
		}
	}
}

func (w *watcher) started(id string) container.Info {
	w.t.Helper()
	return w.next("Started "+id, func(ev container.Event) bool { return ev.Kind == container.Started && ev.Info.ID == id }).Info
}

func (w *watcher) stopped(id string) {
	w.t.Helper()
	w.next("Stopped "+id, func(ev container.Event) bool { return ev.Kind == container.Stopped && ev.Info.ID == id })
}

func (w *watcher) synced(with ...string) []string {
	w.t.Helper()
	return w.next("Synced with "+strings.Join(with, ","), func(ev container.Event) bool {
		if ev.Kind != container.Synced {
			return false
		}
		for _, id := range with {
			if !contains(ev.Running, id) {
				return false
			}
		}
		return true
	}).Running
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestIdentity: a container is reported with its pod's labels (from the
// sandbox: the CRI's container labels do not carry them), the reserved
// k8s.* keys from the CRI's metadata, its image and image id, and its pid;
// the pause container is never reported; a pod label that claims a
// reserved key is replaced by the runtime's value.
func TestIdentity(t *testing.T) {
	eachKind(t, func(t *testing.T, d *containerdtest.Daemon) {
		rt := newRuntime(t, d, nil)
		// Started before Watch: found by the list.
		before := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web", "tier": "frontend"}})
		beforeID := d.RunContainer(t, before, containerdtest.Container{Name: "nginx"})
		w := watch(t, rt)
		running := w.synced(beforeID)
		if len(running) != 1 {
			// Only CRI containers of this test run in the shared daemon
			// at once? Other tests may run; require no pause container.
			for _, id := range running {
				if id == before.ID {
					t.Fatalf("Synced lists the pod sandbox %s: %v", before.ID, running)
				}
			}
		}
		// Started after Watch: found by the events; a hostile pod claims
		// another namespace, a container name and a ServiceAccount.
		evil := d.RunPod(t, containerdtest.Pod{Namespace: "evil", Name: "claims", Labels: map[string]string{
			"app": "web", containerd.LabelNamespace: "shop", containerd.LabelPod: "web-1",
			containerd.LabelContainer: "nginx", containerd.LabelServiceAccount: "shop-admin",
			"io.kubernetes.pod.namespace": "shop", // the kubelet overrides it; the CRI metadata decides anyway
		}})
		evilID := d.RunContainer(t, evil, containerdtest.Container{Name: "sidecar", ImageByID: true})

		got := w.started(evilID)
		want := map[string]string{"app": "web", containerd.LabelNamespace: "evil", containerd.LabelPod: "claims", containerd.LabelContainer: "sidecar"}
		if !equal(got.Labels, want) {
			t.Errorf("hostile pod's Labels = %v, want %v", got.Labels, want)
		}
		if got.Name != "evil/claims/sidecar" {
			t.Errorf("Name = %q", got.Name)
		}
		// The pod the server checks against the API server: the sandbox's
		// metadata, whatever its labels claim.
		if p, want := got.Pod, (container.Pod{UID: evil.Config.GetMetadata().GetUid(), Namespace: "evil", Name: "claims", Container: "sidecar"}); p == nil || *p != want || want.UID == "" {
			t.Errorf("hostile pod's Pod = %+v, want %+v", p, want)
		}
		// The kubelet passed the image id: the name comes from the CRI.
		if got.Image != containerdtest.AppImage {
			t.Errorf("Image by id = %q, want %q", got.Image, containerdtest.AppImage)
		}

		info, err := rt.Inspect(context.Background(), beforeID)
		if err != nil {
			t.Fatal(err)
		}
		want = map[string]string{"app": "web", "tier": "frontend", containerd.LabelNamespace: "shop", containerd.LabelPod: "web-1", containerd.LabelContainer: "nginx"}
		if !equal(info.Labels, want) {
			t.Errorf("Labels = %v, want %v", info.Labels, want)
		}
		if p, want := info.Pod, (container.Pod{UID: before.Config.GetMetadata().GetUid(), Namespace: "shop", Name: "web-1", Container: "nginx"}); p == nil || *p != want {
			t.Errorf("Pod = %+v, want %+v", p, want)
		}
		if info.Image != containerdtest.AppImage {
			t.Errorf("Image = %q, want %q", info.Image, containerdtest.AppImage)
		}
		if id := d.ImageID(t, containerdtest.AppImage); info.ImageDigest != id || !strings.HasPrefix(id, "sha256:") {
			t.Errorf("ImageDigest = %q, want the image id %q", info.ImageDigest, id)
		}
		if !equal(info.ImageLabels, map[string]string{containerdtest.ImageLabel: containerdtest.ImageLabelValue}) {
			t.Errorf("ImageLabels = %v", info.ImageLabels)
		}
		if info.PID <= 1 {
			t.Fatalf("PID = %d", info.PID)
		}
		cg, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/cgroup")
		if err != nil || !bytes.Contains(cg, []byte(beforeID)) {
			t.Errorf("pid %d's cgroup does not name the container (the Deliverer checks it): %s %v", info.PID, cg, err)
		}
		if _, err := rt.Inspect(context.Background(), before.ID); !errors.Is(err, containerd.ErrNotFound) {
			t.Errorf("Inspect(sandbox) = %v, want ErrNotFound", err)
		}
		if _, err := rt.Inspect(context.Background(), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"); !errors.Is(err, containerd.ErrNotFound) {
			t.Errorf("Inspect(unknown) = %v, want ErrNotFound", err)
		}

		d.StopContainer(t, evilID, 0)
		w.stopped(evilID)
		if _, err := rt.Inspect(context.Background(), evilID); !errors.Is(err, containerd.ErrNotRunning) {
			t.Errorf("Inspect(stopped) = %v, want ErrNotRunning", err)
		}
	})
}

// TestHostileLabels: a pod with more labels than MaxLabels is skipped with
// a warning (never reported cut short), unicode labels are reported as
// they are, and the runtime goes on.
func TestHostileLabels(t *testing.T) {
	eachKind(t, func(t *testing.T, d *containerdtest.Daemon) {
		var log logBuf
		rt := newRuntime(t, d, &log)
		w := watch(t, rt)
		w.synced()
		many := map[string]string{}
		for i := range containerd.MaxLabels + 1 {
			many["l"+strconv.Itoa(i)] = strings.Repeat("v", 60)
		}
		huge := d.RunPod(t, containerdtest.Pod{Name: "huge", Labels: many})
		hugeID := d.RunContainer(t, huge, containerdtest.Container{})
		uni := d.RunPod(t, containerdtest.Pod{Name: "unicode", Labels: map[string]string{"app": "wéb-☃", "ключ": "значение"}})
		uniID := d.RunContainer(t, uni, containerdtest.Container{Name: "ünï"})
		got := w.next("Started of a pod after the huge one", func(ev container.Event) bool {
			if ev.Kind == container.Started && ev.Info.ID == hugeID {
				t.Fatalf("the pod with %d labels was reported", len(ev.Info.Labels))
			}
			return ev.Kind == container.Started && ev.Info.ID == uniID
		}).Info
		if got.Labels["app"] != "wéb-☃" || got.Labels["ключ"] != "значение" || got.Labels[containerd.LabelContainer] != "ünï" {
			t.Errorf("unicode labels = %v", got.Labels)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(log.String(), "skipping container") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(log.String(), hugeID[:12]) || !strings.Contains(log.String(), "labels, at most") {
			t.Errorf("no warning naming the skipped container:\n%s", log.String())
		}
		if _, err := rt.Inspect(context.Background(), hugeID); err == nil {
			t.Error("Inspect of the huge pod's container succeeded")
		}
	})
}

// TestWrongSocket: a socket where nothing listens fails Watch at once with
// an error naming it.
func TestWrongSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	rt, err := containerd.New(containerd.Config{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := rt.Watch(ctx); err == nil || !strings.Contains(err.Error(), sock) {
		t.Fatalf("Watch = %v, want an error naming %s", err, sock)
	}
	if _, err := containerd.New(containerd.Config{Socket: "relative.sock"}); err == nil {
		t.Error("a relative socket path was accepted")
	}
}

// TestDelivery: the tmpfs Deliverer writes a file into a running pod's
// container at /run/coffer through the pid the runtime reports: the
// container reads it, a rotation replaces it, an empty Apply revokes it,
// the value is nowhere under containerd's root and state, and at stop the
// runtime reports Stopped and the files die with the container.
func TestDelivery(t *testing.T) {
	eachKind(t, func(t *testing.T, d *containerdtest.Daemon) {
		rt := newRuntime(t, d, nil)
		w := watch(t, rt)
		w.synced()
		p := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Labels: map[string]string{"app": "web"}})
		id := d.RunContainer(t, p, containerdtest.Container{Name: "web"})
		info := w.started(id)

		del, err := tmpfs.New(tmpfs.Config{Dir: "/run/coffer"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { del.Close() })
		ctx := context.Background()
		value := "v1-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-s3cr3t-marker"
		file := func(v string, version uint64) []secret.File {
			return []secret.File{{Secret: "shop/db", Version: version, Name: "db-password", Mode: 0o400, Value: secret.Value(v)}}
		}
		if err := del.Apply(ctx, info, file(value, 1)); err != nil {
			t.Fatal(err)
		}
		if out, err := d.Exec(t, id, "cat", "/run/coffer/db-password"); err != nil || out != value {
			t.Fatalf("container reads %q, %v", out, err)
		}
		// /var/run links to /run, as in Debian images: the same file.
		if out, err := d.Exec(t, id, "cat", "/var/run/coffer/db-password"); err != nil || out != value {
			t.Fatalf("via /var/run: %q, %v", out, err)
		}
		mounts, _ := d.Exec(t, id, "cat", "/proc/self/mountinfo")
		if !strings.Contains(mounts, " /run/coffer ") || !strings.Contains(mounts, "nosuid,nodev,noexec") {
			t.Errorf("no nosuid,nodev,noexec tmpfs at /run/coffer:\n%s", mounts)
		}
		rotated := "v2-" + value
		if err := del.Apply(ctx, info, file(rotated, 2)); err != nil {
			t.Fatal(err)
		}
		if out, err := d.Exec(t, id, "cat", "/run/coffer/db-password"); err != nil || out != rotated {
			t.Fatalf("after rotation the container reads %q, %v", out, err)
		}
		noHostCopy(t, d.Dir, value)
		if err := del.Apply(ctx, info, nil); err != nil {
			t.Fatal(err)
		}
		if out, err := d.Exec(t, id, "ls", "/run/coffer"); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("after revocation /run/coffer holds %q, %v", out, err)
		}
		if err := del.Apply(ctx, info, file(value, 1)); err != nil {
			t.Fatal(err)
		}
		d.StopContainer(t, id, 0)
		w.stopped(id)
		if err := del.Release(ctx, info); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(info.PID) + "/root/run/coffer"); err == nil {
			t.Error("the container's process and its tmpfs outlived the stop")
		}
		noHostCopy(t, d.Dir, value)
	})
}

// noHostCopy fails t if any file under dir (containerd's root and state,
// snapshots included) holds value.
func noHostCopy(t *testing.T, dir, value string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		if fi, err := e.Info(); err != nil || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(value)) {
			t.Errorf("the value is on the host's disk in %s", path)
		}
		return nil
	})
}

// TestRestart: when containerd restarts, Watch reconnects, lists again
// (the running container, with the same pid) and follows new starts.
func TestRestart(t *testing.T) {
	eachKind(t, func(t *testing.T, d *containerdtest.Daemon) {
		rt := newRuntime(t, d, nil)
		p := d.RunPod(t, containerdtest.Pod{Name: "survivor"})
		id := d.RunContainer(t, p, containerdtest.Container{})
		w := watch(t, rt)
		w.synced(id)
		info, err := rt.Inspect(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		again := w.started(id)
		if again.PID != info.PID {
			t.Errorf("pid after restart %d, before %d", again.PID, info.PID)
		}
		w.synced(id)
		p2 := d.RunPod(t, containerdtest.Pod{Name: "after-restart"})
		id2 := d.RunContainer(t, p2, containerdtest.Container{})
		w.started(id2)
	})
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// A container being created (as while its createRuntime hook runs) is
// reported with its pod's uid, namespace and name: with --kubeconfig the
// server confirms those with the API server, and a container without them
// would be refused (and, for a pod that requires its secrets, started
// without them).
func TestCreatingCarriesThePod(t *testing.T) {
	eachKind(t, func(t *testing.T, d *containerdtest.Daemon) {
		rt := newRuntime(t, d, nil)
		p := d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-c", UID: "0b5e7c1e-0000-4000-8000-00000000c0de", Labels: map[string]string{"app": "web"}})
		id := d.RunContainer(t, p, containerdtest.Container{Name: "app", CreateOnly: true})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := rt.Creating(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := container.Pod{UID: "0b5e7c1e-0000-4000-8000-00000000c0de", Namespace: "shop", Name: "web-c", Container: "app"}
		if c.Info.Pod == nil || *c.Info.Pod != want {
			t.Fatalf("Creating's pod = %+v, want %+v", c.Info.Pod, want)
		}
	})
}
